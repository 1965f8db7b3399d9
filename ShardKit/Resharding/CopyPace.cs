namespace ShardKit;

/// <summary>
/// The rows a second every scan of one copy shares (<see cref="MoveOptions.CopyRowsPerSecond"/>): each row is given its
/// slot on one timeline, and a scan whose rows are ahead of theirs waits. Time the copy fell behind (a slow stretch, a
/// chunk's commit) is credited for at most <see cref="MostCredit"/>, so the copy never runs far above its rate to catch up.
/// </summary>
internal sealed class CopyPace
{
    /// <summary>How far behind its timeline the copy may fall and then run at full speed to catch up.</summary>
    public static readonly TimeSpan MostCredit = TimeSpan.FromMilliseconds(100);

    // Waits shorter than this are not worth a timer: the rows stay ahead of their slots and the next look waits for them.
    private static readonly TimeSpan ShortestWait = TimeSpan.FromMilliseconds(1);

    private readonly long _rowsPerSecond;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private long _next; // the timestamp at which the next row is due

    public CopyPace(long rowsPerSecond, TimeProvider? time = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rowsPerSecond, 1);
        _rowsPerSecond = rowsPerSecond;
        _time = time ?? TimeProvider.System;
        _next = _time.GetTimestamp();
        // A twentieth of a second's rows between two looks, at most 256: a slow pace still looks often enough for a
        // cancel to stop it promptly.
        Step = (int)Math.Clamp(rowsPerSecond / 20, 1, 256);
    }

    /// <summary>How many rows a scan copies between two looks at the pace.</summary>
    public int Step { get; }

    /// <summary>Counts <paramref name="rows"/> copied and returns how long the scan that copied them waits now.</summary>
    public TimeSpan Take(long rows)
    {
        lock (_gate)
        {
            var now = _time.GetTimestamp();
            _next = Math.Max(_next, now - (long)(MostCredit.TotalSeconds * _time.TimestampFrequency));
            _next += (long)((double)rows * _time.TimestampFrequency / _rowsPerSecond);
            var wait = TimeSpan.FromSeconds((double)(_next - now) / _time.TimestampFrequency);
            return wait >= ShortestWait ? wait : TimeSpan.Zero;
        }
    }

    /// <summary>Counts <paramref name="rows"/> and waits for their slots.</summary>
    public Task TakeAsync(long rows, CancellationToken ct) =>
        Take(rows) is { Ticks: > 0 } wait ? Task.Delay(wait, _time, ct) : Task.CompletedTask;
}

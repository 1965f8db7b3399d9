namespace ShardKit.Tests.Ids;

/// <summary>
/// A clock tests set by hand, forwards or backwards (FakeTimeProvider refuses to go back), that counts how often it is
/// read, so a test can tell that a caller is waiting on it. Optionally advances by a fixed step on every read. Its
/// timers never fire: lease renewals happen only when a test asks for them.
/// </summary>
internal sealed class ManualClock(DateTimeOffset start, TimeSpan advancePerRead = default) : TimeProvider
{
    private long _ticks = start.UtcTicks;
    private long _reads;

    public long Reads => Interlocked.Read(ref _reads);

    public DateTimeOffset Now
    {
        get => new(Interlocked.Read(ref _ticks), TimeSpan.Zero);
        set => Interlocked.Exchange(ref _ticks, value.UtcTicks);
    }

    public override DateTimeOffset GetUtcNow()
    {
        Interlocked.Increment(ref _reads);
        return new DateTimeOffset(Interlocked.Add(ref _ticks, advancePerRead.Ticks) - advancePerRead.Ticks, TimeSpan.Zero);
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) => new SilentTimer();

    /// <summary>Waits until the clock has been read <paramref name="count"/> more times than <paramref name="since"/>.</summary>
    public async Task ReadAtLeastAsync(long since, long count)
    {
        using var guard = new CancellationTokenSource(TimeSpan.FromSeconds(30)); // a hang guard, not a timing assertion
        while (Reads - since < count)
        {
            await Task.Delay(1, guard.Token);
        }
    }

    private sealed class SilentTimer : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period) => true;

        public void Dispose()
        {
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}

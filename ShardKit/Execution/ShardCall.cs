using System.Diagnostics;

namespace ShardKit;

/// <summary>
/// One attempt of one command on one shard, as every path records it: the breaker's admission (a half-open breaker
/// lets one call through as its probe), the client span, the duration from the shard's start, and one classification
/// of a failure. Disposing it frees a probe the shard never settled (cancelled, or refused by ShardKit before it answered).
/// On a standby the shard's breaker (which guards its writer) is neither asked nor told: a standby that fails is set
/// aside until the background check finds it again, and reads go on while the primary is down.
/// </summary>
internal sealed class ShardCall : IDisposable
{
    private readonly ShardSet _shards;
    private readonly int _shard;
    private readonly ShardServer _server;
    private readonly CommandSummary _summary;
    private readonly Activity? _activity;
    private bool _probe;
    private bool _answered;
    private long _started;
    private bool _disposed;

    public ShardCall(ShardSet shards, int shard, in ShardCommand command, ShardServer server = default)
    {
        _shards = shards;
        _shard = shard;
        _server = server;
        _summary = command.Summary;
        _activity = ShardKitTelemetry.StartCommand(command.Operation, shards.ShardAt(shard), command.Summary,
            shards.ReplicasAt(shard).StandbyOf(server));
    }

    public string Shard => _shards.NameOf(_shard);

    private ShardCircuitBreaker Breaker => _shards.BreakerAt(_shard);

    /// <summary>Asks the breaker; throws <see cref="ShardUnavailableException"/> while it is open.</summary>
    public void Admit() => _probe = _server.IsPrimary && Breaker.ThrowIfOpen();

    /// <summary>The shard's own time starts (after any wait for a fan-out slot).</summary>
    public void Start() => _started = Stopwatch.GetTimestamp();

    /// <summary>The shard answered: a half-open breaker closes, even if the caller reads no further.</summary>
    public void Answered()
    {
        if (!_answered)
        {
            _answered = true;
            _probe = false;
            if (_server.IsPrimary)
            {
                Breaker.OnSuccess();
            }
        }
    }

    /// <summary>The command finished: the shard answered, and its duration is recorded.</summary>
    public void Completed()
    {
        Answered();
        RecordDuration(null);
    }

    /// <summary>
    /// Records a failure everywhere it counts (breaker, span, duration, failure counter) and returns the exception to
    /// surface: a connection failure wrapped so it names the shard, anything else the same instance tagged with it.
    /// </summary>
    public Exception Failed(Exception error, bool opening)
    {
        var surfaced = ShardErrors.ForShard(error, _shards.ShardAt(_shard), opening, _shards.ReplicasAt(_shard).StandbyOf(_server));
        _answered = true;
        _probe = false; // the failure settles it: a connection failure opens the breaker again, anything else frees it
        if (_server.IsPrimary)
        {
            Breaker.OnFailure(surfaced);
        }
        else if (ShardErrors.IsConnectionFailure(surfaced))
        {
            _shards.ReplicasAt(_shard).Standbys[_server.StandbyIndex].Failed(surfaced);
        }

        ShardKitTelemetry.RecordError(_activity, surfaced);
        RecordDuration(surfaced);
        ShardKitTelemetry.RecordFailure(Shard, surfaced);
        return surfaced;
    }

    /// <summary>Adds a tag to the call's span (rows copied, for example).</summary>
    public void Tag(string key, object? value) => _activity?.SetTag(key, value);

    /// <summary>The caller stopped early and the rows it wanted arrived: the rest is not the shard's failure.</summary>
    public void Stopped() => RecordDuration(null);

    // Once per call, and only for a command that started (not one refused by its breaker or cancelled waiting for a slot).
    private void RecordDuration(Exception? error)
    {
        if (_started != 0)
        {
            ShardKitTelemetry.RecordDuration(Shard, _summary, _started, error);
            _started = 0;
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_probe)
        {
            _probe = false;
            Breaker.ReleaseProbe();
        }

        _activity?.Dispose();
    }
}

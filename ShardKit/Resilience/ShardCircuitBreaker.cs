using Microsoft.Extensions.Logging;

namespace ShardKit;

/// <summary>
/// One shard's breaker: closed (commands flow), open after <see cref="CircuitBreakerOptions.FailureThreshold"/>
/// consecutive connection failures (commands fail fast), half-open after the break (one probe at a time; success
/// closes it, failure opens it again). Time comes from a <see cref="TimeProvider"/>, so tests need no sleeps.
/// </summary>
internal sealed class ShardCircuitBreaker(string shard, CircuitBreakerOptions options, TimeProvider time, ILogger logger)
{
    private readonly Lock _gate = new();
    private int _consecutiveFailures;
    private DateTimeOffset _openUntil;
    private bool _open;
    private bool _probing;

    public CircuitState State
    {
        get
        {
            lock (_gate)
            {
                return !_open ? CircuitState.Closed : time.GetUtcNow() < _openUntil ? CircuitState.Open : CircuitState.HalfOpen;
            }
        }
    }

    /// <summary>Throws <see cref="ShardUnavailableException"/> while open; lets one probe through once the break is over.</summary>
    public void ThrowIfOpen()
    {
        if (options.FailureThreshold <= 0)
        {
            return;
        }

        lock (_gate)
        {
            if (!_open)
            {
                return;
            }

            if (time.GetUtcNow() < _openUntil || _probing)
            {
                throw new ShardUnavailableException(shard, _probing ? time.GetUtcNow() : _openUntil);
            }

            _probing = true;
        }
    }

    /// <summary>
    /// Ends a probe that proved nothing either way (the caller stopped or cancelled before the shard answered), so the
    /// next command may probe again instead of finding the shard unavailable for good.
    /// </summary>
    public void ReleaseProbe()
    {
        lock (_gate)
        {
            _probing = false;
        }
    }

    public void OnSuccess()
    {
        lock (_gate)
        {
            _consecutiveFailures = 0;
            if (_open)
            {
                _open = false;
                _probing = false;
                ShardKitLog.CircuitClosed(logger, shard);
            }
        }
    }

    /// <summary>Counts a failure when it is a connection failure; other errors (bad SQL) say nothing about the shard's health.</summary>
    public void OnFailure(Exception error)
    {
        if (options.FailureThreshold <= 0 || !ShardErrors.IsConnectionFailure(error))
        {
            lock (_gate)
            {
                _probing = false;
            }

            return;
        }

        lock (_gate)
        {
            _consecutiveFailures++;
            if (_probing || _consecutiveFailures >= options.FailureThreshold)
            {
                var wasOpen = _open;
                _open = true;
                _probing = false;
                _openUntil = time.GetUtcNow() + options.BreakDuration;
                if (!wasOpen)
                {
                    ShardKitLog.CircuitOpened(logger, shard, _consecutiveFailures, options.BreakDuration.TotalSeconds);
                }
            }
        }
    }
}

using Microsoft.Extensions.Logging;

namespace ShardKit;

/// <summary>
/// One shard's breaker: closed (commands flow), open after <see cref="CircuitBreakerOptions.FailureThreshold"/>
/// consecutive connection failures (commands fail fast), half-open after the break (one probe at a time; success
/// closes it, a connection failure opens it again, anything else frees the probe for the next command). While open, a
/// <see cref="ShardRecoveryProbe"/> tries the shard in the background and closes the breaker as soon as it answers.
/// Time comes from a <see cref="TimeProvider"/>, so tests need no sleeps. Not Polly's breaker: that one counts a failure
/// ratio over at least two calls, closes a half-open circuit on any outcome it does not handle (a SQL error, a
/// cancellation), and settles only inside one <c>Execute</c>, while a stream settles its probe at its first row.
/// </summary>
internal sealed class ShardCircuitBreaker(string shard, CircuitBreakerOptions options, TimeProvider time, ILogger logger)
{
    private readonly Lock _gate = new();
    private int _consecutiveFailures;
    private DateTimeOffset _openUntil;
    private bool _open;
    private bool _probing;

    /// <summary>Called (outside the lock) each time the breaker opens; starts the background recovery probe.</summary>
    public Action? Opened { get; set; }

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

    /// <summary>True while commands are refused or probed (open or half-open).</summary>
    public bool IsOpen
    {
        get
        {
            lock (_gate)
            {
                return _open;
            }
        }
    }

    /// <summary>
    /// Throws <see cref="ShardUnavailableException"/> while open; lets one probe through once the break is over. Returns
    /// true when the caller is that probe: it must then end with <see cref="OnSuccess"/>, <see cref="OnFailure"/> or
    /// <see cref="ReleaseProbe"/>, whatever happens (a stop, a cancellation), or the shard stays unavailable for good.
    /// </summary>
    public bool ThrowIfOpen()
    {
        if (options.FailureThreshold <= 0)
        {
            return false;
        }

        lock (_gate)
        {
            if (!_open)
            {
                return false;
            }

            if (time.GetUtcNow() < _openUntil || _probing)
            {
                throw new ShardUnavailableException(shard, _probing ? time.GetUtcNow() : _openUntil);
            }

            _probing = true;
            return true;
        }
    }

    /// <summary>
    /// Ends a probe that proved nothing either way (the caller stopped or cancelled before the shard answered), so the
    /// next command may probe again instead of finding the shard unavailable for good. Only the probe calls it.
    /// </summary>
    public void ReleaseProbe()
    {
        lock (_gate)
        {
            _probing = false;
        }
    }

    /// <summary>The shard answered: the failure count starts over and an open breaker closes.</summary>
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

    /// <summary>
    /// Counts a failure when it is a connection failure; other errors (bad SQL, a command timeout) say nothing about
    /// the shard's health and only free the probe. A fail-fast refusal is the breaker's own answer: it changes nothing
    /// (and must not free the probe another command holds).
    /// </summary>
    public void OnFailure(Exception error)
    {
        if (error is ShardUnavailableException)
        {
            return;
        }

        if (options.FailureThreshold <= 0 || !ShardErrors.IsConnectionFailure(error))
        {
            ReleaseProbe();
            return;
        }

        if (CountConnectionFailure())
        {
            Opened?.Invoke();
        }
    }

    // True when this failure opened a closed breaker.
    private bool CountConnectionFailure()
    {
        lock (_gate)
        {
            _consecutiveFailures++;
            if (!_probing && _consecutiveFailures < options.FailureThreshold)
            {
                return false;
            }

            var wasOpen = _open;
            _open = true;
            _probing = false;
            _openUntil = time.GetUtcNow() + options.BreakDuration;
            if (!wasOpen)
            {
                ShardKitLog.CircuitOpened(logger, shard, _consecutiveFailures, options.BreakDuration.TotalSeconds);
            }

            return !wasOpen;
        }
    }
}

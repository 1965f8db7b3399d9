namespace ShardKit;

/// <summary>When a shard counts as down: consecutive connection failures, how long it is left alone, how often it is probed.</summary>
public sealed record CircuitBreakerOptions
{
    /// <summary>Five consecutive connection failures open the breaker for 30 seconds; the shard is probed every 500 ms meanwhile.</summary>
    public static CircuitBreakerOptions Default { get; } = new();

    /// <summary>Consecutive connection failures that open the breaker (0 disables it).</summary>
    public int FailureThreshold { get; init; } = 5;

    /// <summary>
    /// How long an open breaker fails commands fast before one command may probe the shard again. The background probe
    /// (<see cref="ProbeInterval"/>) usually closes it much sooner, as soon as the shard answers.
    /// </summary>
    public TimeSpan BreakDuration { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// While the breaker is open, how often a background probe (<c>select 1</c> on a new connection from the shard's
    /// pool) tries the shard; the first answer closes the breaker, so a shard serves again within about this long of
    /// its return. Zero or less turns the probe off (only a command after <see cref="BreakDuration"/> probes then).
    /// </summary>
    public TimeSpan ProbeInterval { get; init; } = TimeSpan.FromMilliseconds(500);
}

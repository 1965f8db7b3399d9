namespace ShardKit;

/// <summary>When a shard counts as down: consecutive connection failures, and how long it is left alone.</summary>
public sealed record CircuitBreakerOptions
{
    /// <summary>Five consecutive connection failures open the breaker for 30 seconds.</summary>
    public static CircuitBreakerOptions Default { get; } = new();

    /// <summary>Consecutive connection failures that open the breaker (0 disables it).</summary>
    public int FailureThreshold { get; init; } = 5;

    /// <summary>How long an open breaker fails commands fast before one probe may try the shard again.</summary>
    public TimeSpan BreakDuration { get; init; } = TimeSpan.FromSeconds(30);
}

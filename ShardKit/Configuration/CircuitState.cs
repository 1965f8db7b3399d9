namespace ShardKit;

/// <summary>A shard's circuit breaker state.</summary>
public enum CircuitState
{
    /// <summary>Commands flow.</summary>
    Closed,

    /// <summary>Commands fail fast with <see cref="ShardUnavailableException"/>.</summary>
    Open,

    /// <summary>The break is over: the next command is a probe.</summary>
    HalfOpen,
}

namespace ShardKit;

/// <summary>One shard's health as seen by <see cref="ShardedDataSource.CheckHealthAsync"/>.</summary>
public sealed record ShardHealth
{
    /// <summary>The shard's name.</summary>
    public required string Shard { get; init; }

    /// <summary>True when a connection opened and the probe query answered.</summary>
    public bool IsReachable { get; init; }

    /// <summary>The probe's round trip (open from the pool, one query), when reachable.</summary>
    public TimeSpan? RoundTrip { get; init; }

    /// <summary>True when the server is a standby (<c>pg_is_in_recovery()</c>); writes would fail there.</summary>
    public bool IsStandby { get; init; }

    /// <summary>ShardKit's prepared (two-phase) transactions waiting on this shard; non-zero for long means run recovery.</summary>
    public long PendingPreparedTransactions { get; init; }

    /// <summary>The shard's circuit breaker state.</summary>
    public CircuitState Circuit { get; init; }

    /// <summary>The shard's standbys, each probed as well; empty when it has none.</summary>
    public IReadOnlyList<StandbyHealth> Standbys { get; init; } = [];

    /// <summary>Why the shard is unreachable: the error's type and message (never a password).</summary>
    public string? Error { get; init; }
}

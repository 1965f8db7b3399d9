namespace ShardKit;

/// <summary>One standby's health as seen by <see cref="ShardedDataSource.CheckHealthAsync"/>, in <see cref="ShardHealth.Standbys"/>.</summary>
public sealed record StandbyHealth
{
    /// <summary>The standby's name: its shard's name and its position, <c>s0/standby-1</c>.</summary>
    public required string Name { get; init; }

    /// <summary>True when a connection opened and the probe query answered.</summary>
    public bool IsReachable { get; init; }

    /// <summary>The probe's round trip (open from the pool, one query), when reachable.</summary>
    public TimeSpan? RoundTrip { get; init; }

    /// <summary>True while the server is still in recovery; false once it was promoted (it then takes the shard's writes).</summary>
    public bool IsStandby { get; init; }

    /// <summary>Bytes of WAL it was behind its primary at the last background check; null when unknown.</summary>
    public long? LagBytes { get; init; }

    /// <summary>How far behind it was in time at the last background check; null when unknown.</summary>
    public TimeSpan? LagTime { get; init; }

    /// <summary>Why the standby is unreachable: the error's type and message (never a password).</summary>
    public string? Error { get; init; }
}

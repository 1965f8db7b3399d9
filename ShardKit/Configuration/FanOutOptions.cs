namespace ShardKit;

/// <summary>How a multi-shard command runs: parallelism, timeouts and the failure policy.</summary>
public sealed record FanOutOptions
{
    /// <summary>The defaults: every shard at once, no timeouts beyond the command's, complete results.</summary>
    public static FanOutOptions Default { get; } = new();

    /// <summary>
    /// The most shards queried at once by one command (connections held per query); null for all of them. When it is
    /// below the number of shards, each shard's rows are buffered while it holds its slot so the others can proceed.
    /// </summary>
    public int? MaxParallelism { get; init; }

    /// <summary>How long each shard may take, from its start to its last row; null for no limit.</summary>
    public TimeSpan? PerShardTimeout { get; init; }

    /// <summary>How long the whole fan-out may take; null for no limit.</summary>
    public TimeSpan? OverallTimeout { get; init; }

    /// <summary>Complete results (default) or partial results.</summary>
    public FanOutPolicy Policy { get; init; } = FanOutPolicy.CompleteResults;

    /// <summary>Where each shard's read goes (primary or a standby, decided per shard); null for the connection's <see cref="ShardedConnection.ReadPolicy"/>.</summary>
    public ReadPolicy? ReadPolicy { get; init; }

    internal void Validate()
    {
        if (MaxParallelism is < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxParallelism), MaxParallelism, "MaxParallelism must be at least 1 (or null for every shard at once).");
        }

        if (PerShardTimeout is { } p && p <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(PerShardTimeout), p, "PerShardTimeout must be positive (or null for none).");
        }

        if (ReadPolicy is { } policy && !Enum.IsDefined(policy))
        {
            throw new ArgumentOutOfRangeException(nameof(ReadPolicy), policy, "ReadPolicy must be Primary, PreferStandby or Standby (or null for the connection's).");
        }

        if (OverallTimeout is { } o && o <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(OverallTimeout), o, "OverallTimeout must be positive (or null for none).");
        }
    }
}

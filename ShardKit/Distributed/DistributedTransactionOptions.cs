namespace ShardKit;

/// <summary>
/// How distributed (two-phase commit) transactions are coordinated and recovered. Set with
/// <see cref="ShardedDataSourceBuilder.UseDistributedTransactions"/>; frozen when the data source is built.
/// </summary>
public sealed class DistributedTransactionOptions
{
    /// <summary>
    /// The shard that keeps the decision log (<c>shardkit_2pc_decisions</c>); null means the first shard. Every
    /// process that commits or recovers for the same shards must name the same coordinator.
    /// </summary>
    public string? CoordinatorShard { get; set; }

    /// <summary>
    /// How old a ShardKit prepared transaction with no commit decision must be before recovery rolls it back
    /// (default one minute). Keep it well above the longest time a commit may spend between its first
    /// <c>PREPARE TRANSACTION</c> and writing its decision; a committer that loses this race is told so and rolls back.
    /// </summary>
    public TimeSpan AbortPreparedAfter { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// How long recovery keeps its "abort" decisions (default one day). They make sure a committer that wakes up late
    /// cannot record a commit for a transaction recovery already rolled back, so keep them far longer than any pause.
    /// </summary>
    public TimeSpan AbortDecisionRetention { get; set; } = TimeSpan.FromDays(1);
}

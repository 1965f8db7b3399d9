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

    /// <summary>
    /// How long a statement inside a distributed transaction waits for a row or table lock before it fails (default
    /// five seconds; null or zero waits without bound). Two distributed transactions that lock rows on two shards in
    /// opposite order wait for each other across servers, where no server's deadlock detector sees the cycle; this bound
    /// breaks it with a <see cref="DistributedLockTimeoutException"/>. Set with <c>SET LOCAL lock_timeout</c> on each shard
    /// the transaction reaches, so sessions outside distributed transactions are unaffected.
    /// </summary>
    public TimeSpan? LockTimeout { get; set; } = DistributedSettings.DefaultLockTimeout;
}

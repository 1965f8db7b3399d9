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
    public TimeSpan? LockTimeout { get; set; } = DefaultLockTimeout;

    /// <summary>PostgreSQL's gid limit is 200 bytes; the prefix, separator and id take 42.</summary>
    internal const int MaxCoordinatorLength = 150;

    internal static readonly TimeSpan DefaultLockTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Every problem with these options, for the builder and the options validator alike.</summary>
    internal List<string> Validate(IReadOnlyList<string> shardNames)
    {
        var errors = new List<string>();
        if (CoordinatorShard is { } name && !shardNames.Contains(name))
        {
            errors.Add($"The distributed transaction coordinator '{name}' is not a configured shard; use one of: {string.Join(", ", shardNames)}.");
        }

        if ((CoordinatorShard ?? shardNames.FirstOrDefault() ?? "").Length > MaxCoordinatorLength)
        {
            errors.Add($"The coordinator shard's name is longer than {MaxCoordinatorLength} characters; it must fit in a PostgreSQL prepared transaction id.");
        }

        if (AbortPreparedAfter < TimeSpan.Zero)
        {
            errors.Add("DistributedTransactionOptions.AbortPreparedAfter cannot be negative.");
        }

        if (AbortDecisionRetention < AbortPreparedAfter)
        {
            errors.Add("DistributedTransactionOptions.AbortDecisionRetention must be at least AbortPreparedAfter.");
        }

        if (LockTimeout is { } lockTimeout && (lockTimeout < TimeSpan.Zero || lockTimeout.TotalMilliseconds > int.MaxValue))
        {
            errors.Add($"DistributedTransactionOptions.LockTimeout must be between zero (no bound) and {TimeSpan.FromMilliseconds(int.MaxValue)}; use null or zero to wait without bound.");
        }

        return errors;
    }
}

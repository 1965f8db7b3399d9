using System.Globalization;

namespace ShardKit;

/// <summary>The validated, frozen form of <see cref="DistributedTransactionOptions"/>.</summary>
internal sealed record DistributedSettings(int CoordinatorIndex, TimeSpan AbortPreparedAfter, TimeSpan AbortDecisionRetention, TimeSpan LockTimeout)
{
    public static DistributedSettings Default { get; } = new(0, TimeSpan.FromMinutes(1), TimeSpan.FromDays(1), DistributedTransactionOptions.DefaultLockTimeout);

    /// <summary>The statement that bounds lock waits in each shard's transaction; null when the bound is off.</summary>
    public string? LockTimeoutSql { get; } = LockTimeout > TimeSpan.Zero
        // Whole milliseconds, rounded up so a sub-millisecond bound does not become 0 (no bound).
        ? "set local lock_timeout = " + ((long)Math.Ceiling(LockTimeout.TotalMilliseconds)).ToString(CultureInfo.InvariantCulture)
        : null;

    public static DistributedSettings From(DistributedTransactionOptions? options, ShardMap map)
    {
        if (options is null)
        {
            return Default;
        }

        var errors = options.Validate(map.ShardNames);
        return errors.Count > 0
            ? throw new ShardConfigurationException(errors)
            : new DistributedSettings(options.CoordinatorShard is { } name ? map.IndexOf(name) : 0,
                options.AbortPreparedAfter, options.AbortDecisionRetention, options.LockTimeout ?? TimeSpan.Zero);
    }
}

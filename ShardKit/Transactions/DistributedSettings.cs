using System.Globalization;

namespace ShardKit;

/// <summary>The validated, frozen form of <see cref="DistributedTransactionOptions"/>.</summary>
internal sealed record DistributedSettings(int CoordinatorIndex, TimeSpan AbortPreparedAfter, TimeSpan AbortDecisionRetention, TimeSpan LockTimeout)
{
    public static readonly TimeSpan DefaultLockTimeout = TimeSpan.FromSeconds(5);

    public static DistributedSettings Default { get; } = new(0, TimeSpan.FromMinutes(1), TimeSpan.FromDays(1), DefaultLockTimeout);

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

        var errors = Validate(options, map.ShardNames);
        return errors.Count > 0
            ? throw new ShardConfigurationException(errors)
            : new DistributedSettings(options.CoordinatorShard is { } name ? map.IndexOf(name) : 0,
                options.AbortPreparedAfter, options.AbortDecisionRetention, options.LockTimeout ?? TimeSpan.Zero);
    }

    /// <summary>Every problem with <paramref name="options"/>, for the builder and the options validator alike.</summary>
    public static List<string> Validate(DistributedTransactionOptions options, IReadOnlyList<string> shardNames)
    {
        var errors = new List<string>();
        if (options.CoordinatorShard is { } name && !shardNames.Contains(name))
        {
            errors.Add($"The distributed transaction coordinator '{name}' is not a configured shard; use one of: {string.Join(", ", shardNames)}.");
        }

        if ((options.CoordinatorShard ?? shardNames.FirstOrDefault() ?? "").Length > GlobalTransactionId.MaxCoordinatorLength)
        {
            errors.Add($"The coordinator shard's name is longer than {GlobalTransactionId.MaxCoordinatorLength} characters; it must fit in a PostgreSQL prepared transaction id.");
        }

        if (options.AbortPreparedAfter < TimeSpan.Zero)
        {
            errors.Add("DistributedTransactionOptions.AbortPreparedAfter cannot be negative.");
        }

        if (options.AbortDecisionRetention < options.AbortPreparedAfter)
        {
            errors.Add("DistributedTransactionOptions.AbortDecisionRetention must be at least AbortPreparedAfter.");
        }

        if (options.LockTimeout is { } lockTimeout && (lockTimeout < TimeSpan.Zero || lockTimeout.TotalMilliseconds > int.MaxValue))
        {
            errors.Add($"DistributedTransactionOptions.LockTimeout must be between zero (no bound) and {TimeSpan.FromMilliseconds(int.MaxValue)}; use null or zero to wait without bound.");
        }

        return errors;
    }
}

namespace ShardKit;

/// <summary>The validated, frozen form of <see cref="DistributedTransactionOptions"/>.</summary>
internal sealed record DistributedSettings(int CoordinatorIndex, TimeSpan AbortPreparedAfter, TimeSpan AbortDecisionRetention)
{
    public static DistributedSettings Default { get; } = new(0, TimeSpan.FromMinutes(1), TimeSpan.FromDays(1));

    public static DistributedSettings From(DistributedTransactionOptions? options, ShardMap map)
    {
        if (options is null)
        {
            return Default;
        }

        var errors = new List<string>();
        var coordinator = 0;
        if (options.CoordinatorShard is { } name && !map.ShardNames.Contains(name))
        {
            errors.Add($"The distributed transaction coordinator '{name}' is not a configured shard; use one of: {string.Join(", ", map.ShardNames)}.");
        }
        else if (options.CoordinatorShard is { } found)
        {
            coordinator = map.IndexOf(found);
        }

        if (options.AbortPreparedAfter < TimeSpan.Zero)
        {
            errors.Add("DistributedTransactionOptions.AbortPreparedAfter cannot be negative.");
        }

        if (options.AbortDecisionRetention < options.AbortPreparedAfter)
        {
            errors.Add("DistributedTransactionOptions.AbortDecisionRetention must be at least AbortPreparedAfter.");
        }

        return errors.Count > 0
            ? throw new ShardConfigurationException(errors)
            : new DistributedSettings(coordinator, options.AbortPreparedAfter, options.AbortDecisionRetention);
    }
}

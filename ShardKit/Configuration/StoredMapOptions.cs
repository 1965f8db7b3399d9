namespace ShardKit;

/// <summary>
/// Where a data source takes its bucket map from when buckets can move between shards: the catalog (schema
/// <c>shardkit</c>) on one shard, followed through <c>LISTEN/NOTIFY</c> with a periodic check as a fallback.
/// </summary>
public sealed class StoredMapOptions
{
    /// <summary>The shard that holds the catalog (the map, its epoch, and the moves). Required.</summary>
    public string CatalogShard { get; set; } = "";

    /// <summary>
    /// How often the map's epoch is read when no notification arrived (a lost notification, a catalog that was down);
    /// 5 seconds by default.
    /// </summary>
    public TimeSpan CheckInterval { get; set; } = DefaultCheckInterval;

    internal static readonly TimeSpan DefaultCheckInterval = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long a write a shard refused (its bucket moved) waits for the new map before the refusal reaches the caller
    /// as a <see cref="ShardBucketMovedException"/>; 10 seconds by default.
    /// </summary>
    public TimeSpan MoveWait { get; set; } = TimeSpan.FromSeconds(10);

    internal IEnumerable<string> Validate(IReadOnlyList<string> shardNames, ShardingStrategyKind strategy)
    {
        if (strategy != ShardingStrategyKind.Hash)
        {
            yield return $"StoredMap needs hash sharding (buckets move between shards); the strategy is {strategy}.";
        }

        if (string.IsNullOrWhiteSpace(CatalogShard))
        {
            yield return "StoredMap:CatalogShard is empty; name the shard that holds the shardkit catalog.";
        }
        else if (!shardNames.Contains(CatalogShard, StringComparer.Ordinal))
        {
            yield return $"StoredMap:CatalogShard '{CatalogShard}' is not a configured shard; the shards are: {string.Join(", ", shardNames)}.";
        }

        if (CheckInterval <= TimeSpan.Zero)
        {
            yield return $"StoredMap:CheckInterval is {CheckInterval}; use a positive interval (5 seconds is a good default).";
        }

        if (MoveWait < TimeSpan.Zero)
        {
            yield return $"StoredMap:MoveWait is {MoveWait}; use zero or more.";
        }
    }
}

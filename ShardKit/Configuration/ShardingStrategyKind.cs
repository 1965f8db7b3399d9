namespace ShardKit;

/// <summary>How keys are placed on shards.</summary>
public enum ShardingStrategyKind
{
    /// <summary>PostgreSQL-compatible hash into buckets, buckets assigned to shards (the default).</summary>
    Hash = 0,

    /// <summary>
    /// Non-negative <c>key mod shardCount</c> over the shards in configured order (integer keys); unlike SQL's
    /// <c>k % n</c> for a negative key, so the SQL that reproduces it is <c>((k % n) + n) % n</c>.
    /// </summary>
    Modulo,

    /// <summary>Half-open key ranges per shard.</summary>
    Range,

    /// <summary>A key-to-shard directory with an optional default shard.</summary>
    List,

    /// <summary>A user delegate from key to shard name; set with <see cref="ShardedDataSourceBuilder.UseCustomSharding"/>.</summary>
    Custom,
}

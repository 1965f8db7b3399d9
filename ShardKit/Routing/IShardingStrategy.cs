namespace ShardKit;

/// <summary>Places a key on a shard: the index of that shard in the map's configured order.</summary>
internal interface IShardingStrategy
{
    /// <summary>The strategy's name for messages and telemetry.</summary>
    string Name { get; }

    /// <summary>The shard index for <paramref name="key"/>; throws <see cref="ShardRoutingException"/> when it has none.</summary>
    int ShardOf(in ShardKeyValue key);
}

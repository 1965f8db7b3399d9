namespace ShardKit;

/// <summary>A directory from key to shard (a tenant per shard), with an optional default for unlisted keys.</summary>
internal sealed class ListShardingStrategy(Dictionary<ShardKeyValue, int> directory, int? defaultShard) : IShardingStrategy
{
    public string Name => "list";

    public int ShardOf(in ShardKeyValue key) =>
        directory.TryGetValue(key, out var shard) ? shard
        : defaultShard ?? throw new ShardRoutingException(
            $"The key {key} is not in the shard list and the list has no default shard; add the key to the list " +
            "or set a default shard.");
}

namespace ShardKit;

/// <summary>A user's delegate from key to shard name (like SQLAlchemy's <c>shard_chooser</c>).</summary>
internal sealed class CustomShardingStrategy(Func<ShardKeyValue, string> chooser, IReadOnlyDictionary<string, int> shardIndex)
    : IShardingStrategy
{
    public string Name => "custom";

    public int ShardOf(in ShardKeyValue key)
    {
        var name = chooser(key);
        return name is not null && shardIndex.TryGetValue(name, out var index)
            ? index
            : throw new ShardRoutingException(
                $"The custom shard chooser returned '{name}' for key {key}, which is not a configured shard; " +
                $"return one of: {string.Join(", ", shardIndex.Keys)}.");
    }
}

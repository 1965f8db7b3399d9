namespace ShardKit;

/// <summary>
/// Integer keys placed by non-negative <c>key mod shardCount</c> over the shards in configured order: the placement
/// of SQLAlchemy's sharding example, so data placed that way reads back here.
/// </summary>
internal sealed class ModuloShardingStrategy(int shardCount) : IShardingStrategy
{
    public string Name => "modulo";

    public int ShardOf(in ShardKeyValue key)
    {
        if (key.Kind != ShardKeyKind.Integer)
        {
            throw new ShardRoutingException(
                $"Modulo sharding places integer keys only, not a {key.Kind} key; use UseHashSharding for Guid or string keys.");
        }

        var r = key.Integer % shardCount;
        return (int)(r < 0 ? r + shardCount : r);
    }
}

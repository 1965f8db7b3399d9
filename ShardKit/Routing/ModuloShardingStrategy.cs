namespace ShardKit;

/// <summary>
/// Integer keys placed by non-negative <c>key mod shardCount</c> over the shards in configured order: the placement
/// of SQLAlchemy's sharding example (Python's <c>%</c>), so data placed that way reads back here. A negative key
/// differs from SQL's <c>k % n</c>, which keeps the key's sign (<c>-7 % 4 = -3</c>; here shard 1): the SQL that
/// reproduces this placement is <c>((k % n) + n) % n</c>, which holds for every <c>bigint</c> including its minimum.
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

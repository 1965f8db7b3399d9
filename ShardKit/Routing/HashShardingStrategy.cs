
namespace ShardKit;

/// <summary>
/// PostgreSQL-compatible hash placement: the key is hashed as the server hashes it (<c>hashint8</c>, <c>hashtext</c>,
/// <c>uuid_hash</c>), the int32 hash space is cut into equal buckets, and a bucket map assigns buckets to shards. The
/// same placement can therefore be computed, checked and moved in SQL on the server.
/// </summary>
internal sealed class HashShardingStrategy(BucketMap buckets) : IShardingStrategy
{
    public string Name => "hash";

    public BucketMap Buckets { get; } = buckets;

    public int ShardOf(in ShardKeyValue key) => Buckets.ShardOfBucket(BucketOf(key));

    public int BucketOf(in ShardKeyValue key) => BucketMath.BucketOf(Hash(key), Buckets.Count);

    /// <summary>The key's PostgreSQL hash.</summary>
    public static int Hash(in ShardKeyValue key) => key.Kind switch
    {
        ShardKeyKind.Integer => PostgresHash.HashInt8(key.Integer),
        ShardKeyKind.String => PostgresHash.HashText(key.String),
        ShardKeyKind.Guid => PostgresHash.UuidHash(key.Guid),
        _ => throw Unplaceable(key),
    };

    private static ShardRoutingException Unplaceable(in ShardKeyValue key) => new(
        $"Hash sharding cannot place a {key.Kind} key; hash keys are short, int, long, Guid or string. " +
        "Use UseRangeSharding or UseListSharding for date keys.");
}

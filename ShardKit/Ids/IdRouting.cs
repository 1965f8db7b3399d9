namespace ShardKit;

/// <summary>The shard of an id: the owner of the bucket it carries, or with strategies other than hash its shard index.</summary>
internal static class IdRouting
{
    public static int ShardOf(ShardMap map, long id)
    {
        var bucket = ShardId.BucketOf(id);
        if (map.Buckets is { } buckets)
        {
            return bucket < buckets.Count
                ? buckets.ShardOfBucket(bucket)
                : throw new ShardIdException(
                    $"Id {id} carries bucket {bucket}, but this map has only {buckets.Count} buckets: it was made for a " +
                    "map with more. Read it with the map it was made for, or target its shard with OnShard(name).");
        }

        return bucket < map.ShardNames.Count
            ? bucket
            : throw new ShardIdException(
                $"Id {id} carries shard index {bucket}, but this {map.StrategyName} map has only {map.ShardNames.Count} " +
                "shards: it was made for another map. Target its shard with OnShard(name).");
    }
}

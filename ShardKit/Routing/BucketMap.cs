namespace ShardKit;

/// <summary>
/// Which shard owns each hash bucket. Immutable; by default buckets are spread evenly, contiguous runs per shard in
/// configured order (bucket <c>b</c> of <c>B</c> goes to shard <c>b * N / B</c>).
/// </summary>
public sealed class BucketMap
{
    /// <summary>The largest bucket count: ids carry their bucket in 12 bits.</summary>
    public const int MaxBuckets = 4096;

    private readonly int[] _owners;

    internal BucketMap(int[] owners) => _owners = owners;

    /// <summary>The number of buckets.</summary>
    public int Count => _owners.Length;

    /// <summary>The index of the shard that owns <paramref name="bucket"/>.</summary>
    public int ShardOfBucket(int bucket) => _owners[bucket];

    /// <summary>The buckets owned by the shard at <paramref name="shardIndex"/>, ascending.</summary>
    public IReadOnlyList<int> BucketsOf(int shardIndex) =>
        Enumerable.Range(0, _owners.Length).Where(b => _owners[b] == shardIndex).ToArray();

    internal static BucketMap Even(int buckets, int shards)
    {
        var owners = new int[buckets];
        for (var b = 0; b < buckets; b++)
        {
            owners[b] = (int)((long)b * shards / buckets);
        }

        return new BucketMap(owners);
    }
}

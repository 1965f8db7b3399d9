using System.Diagnostics;

namespace ShardKit;

/// <summary>
/// Cuts the int32 hash space [<see cref="int.MinValue"/>, <see cref="int.MaxValue"/>] into <c>bucketCount</c>
/// contiguous ranges of equal size (within one hash), bucket 0 holding the lowest hashes, as Citus cuts it into shards.
/// Bucket <c>b</c> is <c>floor((hash + 2^31) * bucketCount / 2^32)</c>, so on the server the rows of bucket <c>b</c> are
/// <c>hashint8(key) between Low and High</c> of <see cref="HashRangeOf"/>, or equally
/// <c>((hashint8(key)::bigint + 2147483648) * bucketCount) &gt;&gt; 32 = b</c>.
/// </summary>
/// <remarks>
/// For a power-of-two bucket count the ranges are exactly Citus's. For other counts Citus gives the whole remainder
/// of 2^32 / n to its last shard, while here it is spread one hash at a time, so bounds differ by fewer than n hashes.
/// </remarks>
internal static class BucketMath
{
    /// <summary>The fewest buckets a hash space can be cut into.</summary>
    public const int MinBucketCount = 1;

    /// <summary>The most buckets a hash space can be cut into (each then still spans 65,536 hashes).</summary>
    public const int MaxBucketCount = 65536;

    private const long HashSpace = 1L << 32;

    /// <summary>The bucket, in <c>0..bucketCount-1</c>, whose hash range contains <paramref name="hash"/>.</summary>
    public static int BucketOf(int hash, int bucketCount)
    {
        Debug.Assert(bucketCount is >= MinBucketCount and <= MaxBucketCount, "bucketCount is validated by the caller");

        // (hash + 2^31) is in [0, 2^32), times at most 2^16 stays below 2^48: no overflow, no division, no branch.
        return (int)((((long)hash - int.MinValue) * bucketCount) >> 32);
    }

    /// <summary>
    /// The inclusive hash range of <paramref name="bucket"/>: every hash in it maps to that bucket, and the ranges of
    /// buckets <c>0..bucketCount-1</c> follow one another from <see cref="int.MinValue"/> to <see cref="int.MaxValue"/>.
    /// </summary>
    public static (int Low, int High) HashRangeOf(int bucket, int bucketCount)
    {
        Debug.Assert(bucketCount is >= MinBucketCount and <= MaxBucketCount, "bucketCount is validated by the caller");
        Debug.Assert(bucket >= 0 && bucket < bucketCount, "bucket is within 0..bucketCount-1");

        return ((int)(Start(bucket, bucketCount) + int.MinValue), (int)(Start(bucket + 1, bucketCount) - 1 + int.MinValue));
    }

    // The first offset u in [0, 2^32] with floor(u * n / 2^32) >= bucket, i.e. ceil(bucket * 2^32 / n).
    private static long Start(int bucket, int bucketCount) => ((bucket * HashSpace) + bucketCount - 1) / bucketCount;
}

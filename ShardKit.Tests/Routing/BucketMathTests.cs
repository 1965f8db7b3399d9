using Npgsql;

namespace ShardKit.Tests.Routing;

public sealed class BucketMathTests
{
    private static readonly int[] BucketCounts = [1, 2, 3, 7, 1024, 65536];

    [TestCaseSource(nameof(BucketCounts))]
    public void Bucket_ranges_tile_the_whole_hash_space_without_gap_or_overlap(int bucketCount)
    {
        var problems = new List<string>();
        long expectedLow = int.MinValue;
        for (var bucket = 0; bucket < bucketCount; bucket++)
        {
            var (low, high) = BucketMath.HashRangeOf(bucket, bucketCount);
            if (low != expectedLow || high < low)
            {
                problems.Add($"bucket {bucket}: [{low}, {high}] should start at {expectedLow}");
            }

            expectedLow = (long)high + 1;
        }

        Assert.That(problems, Is.Empty, string.Join('\n', problems.Take(10)));
        Assert.That(expectedLow - 1, Is.EqualTo(int.MaxValue));
    }

    [TestCaseSource(nameof(BucketCounts))]
    public void Both_ends_of_each_range_map_to_its_bucket(int bucketCount)
    {
        var problems = new List<string>();
        for (var bucket = 0; bucket < bucketCount; bucket++)
        {
            var (low, high) = BucketMath.HashRangeOf(bucket, bucketCount);
            if (BucketMath.BucketOf(low, bucketCount) != bucket || BucketMath.BucketOf(high, bucketCount) != bucket)
            {
                problems.Add($"bucket {bucket}: BucketOf({low}) = {BucketMath.BucketOf(low, bucketCount)}, BucketOf({high}) = {BucketMath.BucketOf(high, bucketCount)}");
            }
        }

        Assert.That(problems, Is.Empty, string.Join('\n', problems.Take(10)));
    }

    [TestCaseSource(nameof(BucketCounts))]
    public void Ranges_differ_in_size_by_at_most_one_hash(int bucketCount)
    {
        var sizes = Enumerable.Range(0, bucketCount)
            .Select(b => BucketMath.HashRangeOf(b, bucketCount))
            .Select(r => (long)r.High - r.Low + 1)
            .ToArray();

        Assert.That(sizes.Max() - sizes.Min(), Is.LessThanOrEqualTo(1));
        Assert.That(sizes.Sum(), Is.EqualTo(1L << 32));
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(64)]
    [TestCase(1024)]
    [TestCase(65536)]
    public void Power_of_two_bucket_counts_cut_exactly_where_Citus_cuts_shards(int bucketCount)
    {
        // Citus: min token of shard i = INT32_MIN + i * (2^32 / shardCount), max = next min - 1, last max = INT32_MAX.
        var increment = (1L << 32) / bucketCount;
        var mismatches = Enumerable.Range(0, bucketCount)
            .Where(b => BucketMath.HashRangeOf(b, bucketCount) != ((int)(int.MinValue + (b * increment)), (int)(int.MinValue + ((b + 1) * increment) - 1)))
            .ToArray();

        Assert.That(mismatches, Is.Empty);
    }

    [Test]
    public void Random_hashes_fall_inside_the_range_of_their_bucket()
    {
        var random = new Random(20240611);
        foreach (var bucketCount in BucketCounts)
        {
            for (var i = 0; i < 10_000; i++)
            {
                var hash = random.Next(int.MinValue, int.MaxValue);
                var bucket = BucketMath.BucketOf(hash, bucketCount);
                var (low, high) = BucketMath.HashRangeOf(bucket, bucketCount);
                if (hash < low || hash > high)
                {
                    Assert.Fail($"{bucketCount} buckets: hash {hash} → bucket {bucket} [{low}, {high}]");
                }
            }
        }

        Assert.Pass();
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(7)]
    [TestCase(1024)]
    [TestCase(65536)]
    public async Task The_server_side_bucket_expression_agrees_with_BucketOf(int bucketCount)
    {
        var keys = RandomKeys(bucketCount);

        var server = await QueryIntsAsync(
            "select array_agg((((hashint8(k)::bigint + 2147483648) * @n) >> 32)::int order by i) from unnest(@keys) with ordinality as t(k, i)",
            ("keys", keys), ("n", bucketCount));

        var mine = keys.Select(k => BucketMath.BucketOf(PostgresHash.HashInt8(k), bucketCount)).ToArray();
        Assert.That(mine, Is.EqualTo(server));
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(7)]
    [TestCase(64)]
    public async Task Hashint8_between_the_bucket_bounds_selects_exactly_the_keys_of_that_bucket(int bucketCount)
    {
        var keys = RandomKeys(bucketCount);
        var ranges = Enumerable.Range(0, bucketCount).Select(b => BucketMath.HashRangeOf(b, bucketCount)).ToArray();

        // Each key joins every range whose "hashint8(k) between low and high" holds: exactly one, its own bucket.
        var server = await QueryIntsAsync(
            """
            select array_agg((r.b - 1)::int order by t.i)
            from unnest(@keys) with ordinality as t(k, i)
            join unnest(@lows, @highs) with ordinality as r(low, high, b) on hashint8(t.k) between r.low and r.high
            """,
            ("keys", keys), ("lows", ranges.Select(r => r.Low).ToArray()), ("highs", ranges.Select(r => r.High).ToArray()));

        var mine = keys.Select(k => BucketMath.BucketOf(PostgresHash.HashInt8(k), bucketCount)).ToArray();
        Assert.That(mine, Is.EqualTo(server));
    }

    private static long[] RandomKeys(int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, 10_000).Select(_ => random.NextInt64(long.MinValue, long.MaxValue)).ToArray();
    }

    private static async Task<int[]> QueryIntsAsync(string sql, params (string Name, object Value)[] parameters)
    {
        var shards = await Shards.GetAsync();
        await using var connection = new NpgsqlConnection(shards.ConnectionStrings[0]);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value);
        }

        return (int[])(await command.ExecuteScalarAsync())!;
    }
}

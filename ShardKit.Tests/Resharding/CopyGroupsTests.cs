using NUnit.Framework;

namespace ShardKit.Tests.Resharding;

// How a move's copy cuts a table's buckets into scans: each scan reads the whole source table, so small buckets go many to
// a scan (MoveOptions.CopyScanBytes), never fewer than 8 to one, and at least one scan per parallel worker.
public sealed class CopyGroupsTests
{
    private static readonly int[] ThirtyTwo = [.. Enumerable.Range(100, 32)];

    [Test]
    public void Eight_buckets_to_a_scan_when_the_table_allows_no_more() =>
        Assert.That(BucketReplication.Groups(ThirtyTwo, parallelism: 1).Select(g => g.Length), Is.EqualTo(new[] { 8, 8, 8, 8 }));

    [Test]
    public void Small_buckets_go_in_one_scan_per_parallel_worker()
    {
        Assert.That(BucketReplication.Groups(ThirtyTwo, parallelism: 1, perScan: 1000).Single(), Is.EqualTo(ThirtyTwo));
        Assert.That(BucketReplication.Groups(ThirtyTwo, parallelism: 2, perScan: int.MaxValue).Select(g => g.Length), Is.EqualTo(new[] { 16, 16 }));
    }

    [Test]
    public void A_share_under_eight_buckets_still_scans_eight_at_a_time() =>
        Assert.That(BucketReplication.Groups(ThirtyTwo, parallelism: 1, perScan: 1).Select(g => g.Length), Is.EqualTo(new[] { 8, 8, 8, 8 }));

    // The largest share there is: every bucket of the move in one scan, recorded in one statement, all placed.
    [Test]
    public async Task A_move_with_the_largest_scan_share_copies_every_bucket_in_one_scan()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([new ShardedTable(ReshardingShards.Table, "id")]);
        var truth = await MoveTests.SeedRowsAsync(admin, 2000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(12).ToArray();
        var reports = new List<MoveProgress>();

        await admin.Resharding.MoveBucketsAsync(buckets, "s1",
            new MoveOptions { CopyScanBytes = long.MaxValue, CleanupDelay = TimeSpan.Zero, AnnounceWait = TimeSpan.Zero, DeletePause = TimeSpan.Zero },
            new InlineProgress(reports.Add));

        Assert.That(await shards.ScalarAsync<int>(0, "select count(*)::int from shardkit.move_chunk"), Is.EqualTo(12));
        Assert.That(reports.Where(p => p.State == MoveState.Copying && p.RowsCopied > 0).Select(p => p.RowsCopied).Distinct().Count(), Is.EqualTo(1),
            "one scan: the rows copied went up once");
        await MoveTests.AssertPlacedAsync(shards, admin, truth);
    }

    // The share comes from the table's size on disk: a plain table's own, a partitioned table's partitions' together
    // (pg_partition_tree lists nothing for a plain table; summing it alone made every table 0 bytes, one scan).
    [TestCase("create table {0} (id bigint primary key, name text)")]
    [TestCase("create table {0} (id bigint primary key, name text) partition by hash (id); " +
              "create table {0}_a partition of {0} for values with (modulus 2, remainder 0); " +
              "create table {0}_b partition of {0} for values with (modulus 2, remainder 1)")]
    public async Task The_scan_share_is_a_quarter_of_the_buckets_for_a_quarter_of_the_table(string ddl)
    {
        await using var f = await MoveFixture.CreateAsync(ddl);
        await f.OnSourceAsync($"insert into {f.Table} select g, md5(g::text) from generate_series(1, 20000) g");
        var table = await f.DescribeAsync("id");
        await using var source = new Npgsql.NpgsqlConnection(f.Source);
        await source.OpenAsync();
        var size = (long)(await new Npgsql.NpgsqlCommand(
            $"select coalesce((select sum(pg_table_size(relid)) from pg_partition_tree('{f.Table}'::regclass) where isleaf), pg_table_size('{f.Table}'::regclass))::bigint",
            source).ExecuteScalarAsync())!;
        Assume.That(size, Is.GreaterThan(500_000));

        var perScan = await BucketReplication.BucketsPerScanAsync(source, [table], 64, size / 4, CancellationToken.None);

        Assert.That(perScan[table.QualifiedName], Is.InRange(15, 16));
    }

    [TestCase(1, 8)]
    [TestCase(3, 8)]
    [TestCase(1, 12)]
    [TestCase(4, 20)]
    [TestCase(64, 20)]
    public void Every_bucket_is_in_exactly_one_scan_in_order(int parallelism, int perScan)
    {
        var groups = BucketReplication.Groups(ThirtyTwo, parallelism, perScan).ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(groups.SelectMany(g => g), Is.EqualTo(ThirtyTwo));
            Assert.That(groups, Has.All.Property("Length").GreaterThan(0));
            Assert.That(groups.Max(g => g.Length), Is.LessThanOrEqualTo(Math.Max(perScan, BucketReplication.MinBucketsPerScan)));
            Assert.That(groups, Has.Length.GreaterThanOrEqualTo(Math.Min(parallelism, ThirtyTwo.Length)));
        });
    }
}

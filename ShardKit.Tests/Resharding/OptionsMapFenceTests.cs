using Dapper;
using Microsoft.Extensions.Time.Testing;

namespace ShardKit.Tests.Resharding;

// A data source configured with a fixed map (no UseStoredMap) never reads the catalog, so it never learns of a move. Where
// the shards carry a fence, its writes must still name their buckets: an update or delete of a key moved away finds no row
// on the old owner (the move's cleanup deleted it) and would report 0 rows, a silently lost write. It asks each shard
// once whether it carries a fence, and shards without one get the write as it was written.
[TestFixture]
public sealed class OptionsMapFenceTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    private static readonly MoveOptions Quick = new() { CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero };

    private static async Task<(ReshardingShards Shards, ShardedDataSource Admin, Dictionary<long, int?> Truth, int[] Buckets)> MovedAsync()
    {
        var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 400);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(4).ToArray();
        await admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick);
        return (shards, admin, truth, buckets);
    }

    [Test]
    public async Task Sync_and_batch_writes_of_a_moved_key_are_refused_with_the_typed_error_not_run_as_0_rows()
    {
        var (shards, admin, truth, buckets) = await MovedAsync();
        await using var _ = shards;
        var legacy = shards.NewSource(stored: false);
        var moved = truth.Keys.Where(k => buckets.Contains(admin.Map.BucketOf(k))).Take(2).ToArray();
        var stays = truth.Keys.First(k => admin.Map.ShardFor(k) == "s0");
        using var db = legacy.CreateConnection();

        var sync = Assert.Throws<ShardBucketMovedException>(() => db.Execute("update items set n = -1 where id = @Id", new Item { Id = moved[0] }));
        Assert.That(sync!.MovedTo, Is.EqualTo("s1"));
        Assert.That(sync.Bucket, Is.EqualTo(admin.Map.BucketOf(moved[0])));

        var delete = Assert.ThrowsAsync<ShardBucketMovedException>(() => db.ExecuteAsync("delete from items where id = @Id", new Item { Id = moved[1] }));
        Assert.That(delete!.MovedTo, Is.EqualTo("s1"));

        // A batch of items, one of them moved: refused before its group ran, nothing of that shard's group kept.
        var batch = new[] { new Item { Id = stays, N = -2 }, new Item { Id = moved[0], N = -2 } };
        var error = await ShardKit.Tests.Adversary.ReshardingAdversaryTests.CatchAsync(() => db.ExecuteBatchAsync("update items set n = @N where id = @Id", batch));
        Assert.That(error, Is.Not.Null, "a batch with a moved key was 'done' with 0 rows for it on the old owner");
        Assert.That(ShardBucketMovedException.IsMoved(error!), Is.True, error!.ToString());

        // A write to a bucket the shard still owns runs as before.
        Assert.That(await db.ExecuteAsync("update items set n = n where id = @Id", new Item { Id = stays }), Is.EqualTo(1));
        await MoveTests.AssertPlacedAsync(shards, admin, truth);
    }

    [Test]
    public async Task Shards_without_a_fence_get_the_write_as_written_and_are_asked_again_after_a_while()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var legacy = shards.NewSource(stored: false, more: b => b.UseTimeProvider(time));
        await using var db = legacy.CreateConnection();
        var key = Enumerable.Range(1, 1000).Select(i => (long)i).First(k => legacy.Map.ShardFor(k) == "s0");

        // No fence yet: the write runs as written (no shardkit schema is needed for it).
        Assert.That(await db.ExecuteAsync("insert into items (id, payload, n) values (@Id, 'a', 1)", new Item { Id = key }), Is.EqualTo(1));
        Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from pg_namespace where nspname = 'shardkit'"), Is.EqualTo(0));

        // Seeded and moved while this data source runs: until it asks again, its writes go unnamed (the rows' triggers still
        // check what they touch); after ShardSet.FenceAskAgain it names its buckets and a 0-row update of the moved key is
        // refused.
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var bucket = admin.Map.BucketOf(key);
        await admin.Resharding.MoveBucketsAsync([bucket], "s1", Quick);

        Assert.That(await db.ExecuteAsync("update items set n = 2 where id = @Id", new Item { Id = key }), Is.EqualTo(0),
            "before asking again the write is not named (the known window)");
        time.Advance(TimeSpan.FromMinutes(1) + TimeSpan.FromSeconds(1));
        // The first write after that asks again in the background (it goes unnamed); the answer comes within moments.
        var refused = default(Exception);
        for (var i = 0; i < 100 && refused is null; i++)
        {
            refused = await ShardKit.Tests.Adversary.ReshardingAdversaryTests.CatchAsync(() => db.ExecuteAsync("update items set n = 2 where id = @Id", new Item { Id = key }));
            if (refused is null)
            {
                await Task.Delay(50);
            }
        }

        Assert.That(refused, Is.InstanceOf<ShardBucketMovedException>(), refused?.ToString());
        Assert.That(await shards.ScalarAsync<int>(1, "select n from items where id = @key", new { key }), Is.EqualTo(1), "the new owner keeps the row");
    }

    // A fence seen once is named until a write finds it gone: that write fails (its transaction, if any, is the caller's
    // to roll back), and the next one asks the shard again and runs as written.
    [Test]
    public async Task A_fence_removed_after_it_was_seen_fails_one_write_then_the_shard_is_asked_again()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var legacy = shards.NewSource(stored: false);
        await using var db = legacy.CreateConnection();
        var key = Enumerable.Range(1, 1000).Select(i => (long)i).First(k => legacy.Map.ShardFor(k) == "s0");
        Assert.That(await db.ExecuteAsync("insert into items (id, payload, n) values (@Id, 'a', 1)", new Item { Id = key }), Is.EqualTo(1));

        await shards.ScalarAsync<object>(0, "drop procedure shardkit.name_buckets(text)");
        var error = await ShardKit.Tests.Adversary.ReshardingAdversaryTests.CatchAsync(() =>
            db.ExecuteAsync("update items set n = 2 where id = @Id", new Item { Id = key }));
        Assert.That(error?.ToString(), Does.Contain("shardkit.name_buckets"));

        Assert.That(await db.ExecuteAsync("update items set n = 3 where id = @Id", new Item { Id = key }), Is.EqualTo(1));
        Assert.That(await shards.ScalarAsync<int>(0, "select n from items where id = @key", new { key }), Is.EqualTo(3));
    }

    // A data source whose map has another bucket count than the fence would name other buckets than the fence checks (its
    // bucket 12 of 16 is the fence's bucket 12 of 64, owned by s0): it does not name them there, and its writes run
    // with the rows' own checks, which compute the fence's buckets.
    [Test]
    public async Task A_map_of_another_bucket_count_does_not_name_its_buckets_to_the_fence()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        Assert.That(shards.Buckets, Is.Not.EqualTo(16));
        var logs = new ShardKit.Tests.Migrations.LogCapture();
        await using var other = new ShardedDataSourceBuilder().UseHashSharding(16).AddEntity<Item>().UseLoggerFactory(logs)
            .AddShard("s0", shards.Direct[0]).AddShard("s1", shards.Direct[1]).Build();
        var key = Enumerable.Range(1, 10_000).Select(i => (long)i)
            .First(k => other.Map.ShardFor(k) == "s1" && admin.Map.ShardFor(k) == "s1" && !admin.Map.Buckets!.BucketsOf(1).Contains(other.Map.BucketOf(k)));
        await using var db = other.CreateConnection();

        Assert.That(await db.ExecuteAsync("insert into items (id, payload, n) values (@Id, 'other', 1)", new Item { Id = key }), Is.EqualTo(1));
        Assert.That(await db.ExecuteAsync("update items set n = 2 where id = @Id", new Item { Id = key }), Is.EqualTo(1));
        Assert.That(await shards.ScalarAsync<int>(1, "select n from items where id = @key", new { key }), Is.EqualTo(2));
        Assert.That(logs.Logs.Count(l => l.EventId == 1707), Is.EqualTo(1), "one warning naming both bucket counts");
        Assert.That(logs.Logs.Single(l => l.EventId == 1707).Message, Does.Contain(shards.Buckets.ToString()).And.Contain("16"));
    }
}

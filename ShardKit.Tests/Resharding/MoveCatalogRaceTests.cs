using Dapper;
using Npgsql;

namespace ShardKit.Tests.Resharding;

/// <summary>Catalog records that two writers make at once: a move's parallel scans, two moves' switches.</summary>
[TestFixture]
public sealed class MoveCatalogRaceTests
{
    // CI, 1 run in several (ReshardingAdversary4Tests, parallel scans): a resumed move's RowsCopied was one scan's rows short
    // of its chunks' sum. Two scans recorded their chunks at once; the later total, waiting on the earlier one's row lock,
    // summed the chunks of the snapshot it started with. Here both records wait on a lock the test holds on the move's
    // row, so they always overlap.
    [Test]
    public async Task Scans_recording_their_chunks_at_once_both_count_in_the_moves_rows_copied()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([new ShardedTable(ReshardingShards.Table, "id")]);
        const string moveId = "chunk-record-test";
        await using var catalog = await shards.OpenAsync(0);
        await catalog.ExecuteAsync("insert into shardkit.move (id, buckets, source, target, state) values (@moveId, '{1,2,3,4}', 's0', 's1', 'Copying')",
            new { moveId });
        var mover = admin.Resharding.Mover(null, null);

        await using var holder = await shards.OpenAsync(0);
        await using var hold = await holder.BeginTransactionAsync();
        await holder.ExecuteAsync("select 1 from shardkit.move where id = @moveId for update", new { moveId }, hold);
        var first = mover.ChunksDoneAsync(moveId, "public.items", [(1, 100), (2, 20)], CancellationToken.None);
        var second = mover.ChunksDoneAsync(moveId, "public.items", [(3, 3000), (4, 400)], CancellationToken.None);
        await WaitForLockWaitersAsync(shards, holder, 2, first, second);

        await hold.CommitAsync();
        await Task.WhenAll(first, second);

        var sum = await shards.ScalarAsync<long>(0, "select sum(rows)::bigint from shardkit.move_chunk where move_id = @moveId", new { moveId });
        var move = (await admin.Resharding.GetMovesAsync()).Single(m => m.MoveId == moveId);
        Assert.That(sum, Is.EqualTo(3520));
        Assert.That(move.RowsCopied, Is.EqualTo(3520), "the move's total counts both scans");
    }

    // Two disjoint moves switching at once each read the map's epoch before either raised it, and gave their buckets the
    // same epoch; the map's own epoch then ran one ahead of both.
    [Test]
    public async Task Two_switches_at_once_give_their_buckets_the_epochs_each_made()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([new ShardedTable(ReshardingShards.Table, "id")]);
        var before = await shards.ScalarAsync<long>(0, "select epoch from shardkit.map");
        var owned = admin.Map.Buckets!.BucketsOf(0).Take(2).ToArray();

        await using var holder = await shards.OpenAsync(0);
        await using var hold = await holder.BeginTransactionAsync();
        await holder.ExecuteAsync("select 1 from shardkit.map for update", transaction: hold);
        await using var a = await shards.OpenAsync(0);
        await using var b = await shards.OpenAsync(0);
        var first = BucketMover.ExecuteCatalogAsync(a, BucketMover.SwitchCatalogSql, CancellationToken.None, new[] { owned[0] }, "s1", "move-a");
        var second = BucketMover.ExecuteCatalogAsync(b, BucketMover.SwitchCatalogSql, CancellationToken.None, new[] { owned[1] }, "s1", "move-b");
        await WaitForLockWaitersAsync(shards, holder, 2, first, second);
        await hold.CommitAsync();
        await Task.WhenAll(first, second);

        var epochs = (await holder.QueryAsync<long>("select epoch from shardkit.map_bucket where bucket = any(@owned) order by epoch", new { owned })).ToArray();
        Assert.That(await shards.ScalarAsync<long>(0, "select epoch from shardkit.map"), Is.EqualTo(before + 2));
        Assert.That(epochs, Is.EqualTo(new[] { before + 1, before + 2 }), "each switch's buckets carry the epoch it made");
    }

    private static async Task WaitForLockWaitersAsync(ReshardingShards shards, NpgsqlConnection holder, int count, params Task[] waiting)
    {
        await using var look = await shards.OpenAsync(0);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (await look.ExecuteScalarAsync<int>(
                   "select count(*)::int from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and pid <> @pid",
                   new { pid = holder.ProcessID }) < count)
        {
            Assert.That(waiting.Any(t => t.IsCompleted), Is.False, "a writer did not wait on the held lock");
            await Task.Delay(20, timeout.Token);
        }
    }
}

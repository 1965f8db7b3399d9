using Dapper;

namespace ShardKit.Tests.Resharding;

// Fences made before shardkit.bucket_owner.moved_to existed get the column from a seed or from a move's preflight.
// Adding it takes the table's exclusive lock, behind which every write of the shard would queue: it must not wait
// long for a transaction that holds bucket rows, and two upgrades at once must not collide.
[TestFixture]
public sealed class FenceUpgradeTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    private static readonly MoveOptions Quick = new() { CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero };

    private const string HasColumn =
        "select count(*) from pg_attribute where attrelid = 'shardkit.bucket_owner'::regclass and attname = 'moved_to' and not attisdropped";

    private static async Task DropColumnAsync(ReshardingShards shards, int shard)
    {
        await using var connection = await shards.OpenAsync(shard);
        await connection.ExecuteAsync("alter table shardkit.bucket_owner drop column moved_to");
        Assert.That(await connection.ExecuteScalarAsync<long>(HasColumn), Is.EqualTo(0));
    }

    [Test]
    public async Task A_move_gives_up_on_an_older_fence_a_transaction_holds_with_a_typed_error_then_upgrades_it_once_free()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 200);
        await DropColumnAsync(shards, 0);
        await DropColumnAsync(shards, 1);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(2).ToArray();

        // A transaction holding a bucket row, as a long or prepared one does.
        await using (var holder = await shards.OpenAsync(0))
        {
            await using var transaction = await holder.BeginTransactionAsync();
            await holder.ExecuteAsync("select 1 from shardkit.bucket_owner where bucket = @b for share", new { b = buckets[0] }, transaction);

            var error = Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick));
            Assert.That(error!.Message, Does.Contain("moved_to").And.Contain("'s0'").And.Contain("pg_prepared_xacts"));
            Assert.That(await shards.ScalarAsync<long>(0, HasColumn), Is.EqualTo(0), "the column waits for the lock");
            await transaction.RollbackAsync();
        }

        // The fences are made current before the catalog lists the move: apps never name moving buckets to a fence that
        // cannot check them (shardkit.check_owned), so the failed move left nothing behind.
        Assert.That(await admin.Resharding.GetMovesAsync(), Is.Empty, "no move was recorded");

        // Free again: the move adds the column on both sides.
        var result = await admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick);

        Assert.That(result.Buckets, Is.EquivalentTo(buckets));
        Assert.That((await shards.ScalarAsync<long>(0, HasColumn), await shards.ScalarAsync<long>(1, HasColumn)), Is.EqualTo((1L, 1L)));
        Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from shardkit.bucket_owner where bucket = any(@buckets) and moved_to = 's1'",
            new { buckets }), Is.EqualTo(buckets.Length), "the source records where its buckets went");
        await MoveTests.AssertPlacedAsync(shards, admin, truth);
    }

    [Test]
    public async Task A_seed_gives_up_on_an_older_fence_a_transaction_holds_with_a_typed_error()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        await DropColumnAsync(shards, 1);

        await using var holder = await shards.OpenAsync(1);
        await using var transaction = await holder.BeginTransactionAsync();
        await holder.ExecuteAsync("select 1 from shardkit.bucket_owner where bucket = 0 for share", transaction: transaction);

        var error = Assert.ThrowsAsync<ShardConfigurationException>(() => admin.Resharding.SeedAsync([Items]));
        Assert.That(error!.Message, Does.Contain("moved_to").And.Contain("'s1'"));
        await transaction.RollbackAsync();

        await admin.Resharding.SeedAsync([Items]);
        Assert.That(await shards.ScalarAsync<long>(1, HasColumn), Is.EqualTo(1));
    }

    // Re-creating the fence's procedures makes every backend of the shard compile them again on its next write, which
    // every writer of the shard feels at a move's start: a move leaves a fence of its own version alone (the pg_proc
    // row keeps its xmin), and re-creates one of another version or with a procedure missing.
    [Test]
    public async Task A_move_recreates_the_fences_procedures_only_when_their_version_differs_or_one_is_missing()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 100);
        const string Xmin = "select xmin::text from pg_proc where oid = 'shardkit.refuse_unowned(int[])'::regprocedure";
        const string Comment = "select obj_description('shardkit.refuse_unowned(int[])'::regprocedure, 'pg_proc')";
        Assert.That(await shards.ScalarAsync<string>(0, Comment), Is.EqualTo("shardkit fence " + FenceSql.Version), "the seed records the version");
        var seeded = (await shards.ScalarAsync<string>(0, Xmin), await shards.ScalarAsync<string>(1, Xmin));

        await admin.Resharding.MoveBucketsAsync(admin.Map.Buckets!.BucketsOf(0).Take(2).ToArray(), "s1", Quick);

        Assert.That((await shards.ScalarAsync<string>(0, Xmin), await shards.ScalarAsync<string>(1, Xmin)), Is.EqualTo(seeded),
            "a current fence is left alone");

        // Another version on s0, a procedure missing on s1: both are re-created by the next move.
        await shards.ScalarAsync<object>(0, "comment on function shardkit.refuse_unowned(int[]) is 'shardkit fence 0000000000000000'");
        await shards.ScalarAsync<object>(1, "drop procedure shardkit.check_owned(text)");
        await admin.Resharding.MoveBucketsAsync(admin.Map.Buckets!.BucketsOf(0).Take(2).ToArray(), "s1", Quick);

        Assert.That(await shards.ScalarAsync<string>(0, Xmin), Is.Not.EqualTo(seeded.Item1), "another version is re-created");
        Assert.That(await shards.ScalarAsync<string>(0, Comment), Is.EqualTo("shardkit fence " + FenceSql.Version));
        Assert.That(await shards.ScalarAsync<long>(1, "select count(*) from pg_proc where oid = to_regprocedure('shardkit.check_owned(text)')"),
            Is.EqualTo(1), "a missing procedure is re-created");
        await MoveTests.AssertPlacedAsync(shards, admin, truth);
    }

    // A seed and the preflights of moves can upgrade the same fence at once: one adds the column, the others find it.
    [Test]
    public async Task Upgrades_running_at_once_add_the_column_once_without_failing()
    {
        await using var shards = await ReshardingShards.CreateAsync(1);
        await shards.NewSource().Resharding.SeedAsync([Items]);
        for (var round = 0; round < 5; round++)
        {
            await DropColumnAsync(shards, 0);
            var upgrades = Enumerable.Range(0, 6).Select(async _ =>
            {
                await using var connection = await shards.OpenAsync(0);
                await connection.ExecuteAsync(FenceSql.MovedToColumn);
            });

            Assert.DoesNotThrowAsync(() => Task.WhenAll(upgrades));
            Assert.That(await shards.ScalarAsync<long>(0, HasColumn), Is.EqualTo(1));
        }
    }
}

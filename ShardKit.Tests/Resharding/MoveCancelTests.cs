using Dapper;
using Npgsql;
using static ShardKit.Tests.Adversary.ReshardingAdversaryTests;

namespace ShardKit.Tests.Resharding;

/// <summary>Cancelling a move while a mover runs it, here or in another process.</summary>
[TestFixture]
public sealed class MoveCancelTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    // CI, 1 run in several: a cancel from another data source while the move caught up left rows on both shards. The cancel
    // dropped the slot and deleted the target's copies while the running mover still applied changes to the target. Here
    // the mover copies scan after scan while the cancel runs: before the fix the copy went on writing to the target after
    // the cancel's delete (and its next state overwrote "Cancelled").
    [Test]
    public async Task A_cancel_while_the_copy_runs_stops_the_copy_before_it_deletes()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 4000);
        var operatorSource = shards.NewSource();
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(16).ToArray();
        Task? cancel = null;

        var move = CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1",
            new MoveOptions { CopyScanBytes = 1, Parallelism = 1, AnnounceWait = TimeSpan.Zero, CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero },
            new InlineProgress(p =>
            {
                if (p.State == MoveState.Copying && p.RowsCopied > 0 && cancel is null)
                {
                    cancel = operatorSource.Resharding.CancelMoveAsync(p.MoveId);
                    // The copy's next scans run after a cancel that does not wait for the mover to stop (it ended within
                    // this wait); one that does waits for this mover, which finds its target session ended.
                    cancel.Wait(TimeSpan.FromSeconds(3));
                }
            })));

        var moveError = await move.WaitAsync(TimeSpan.FromMinutes(2));
        Assert.That(cancel, Is.Not.Null, "no copy progress reported");
        var cancelError = await CatchAsync(() => cancel!.WaitAsync(TimeSpan.FromMinutes(2)));
        TestContext.Out.WriteLine($"move: {moveError?.Message}\ncancel: {cancelError?.Message}");
        Assert.That(cancelError, Is.Null);
        Assert.That(moveError, Is.InstanceOf<ShardMoveException>(), "the cancelled mover stops with a typed error");
        Assert.That(moveError!.Message, Does.Contain("was cancelled while").And.Not.Contain("Resume it"));
        Assert.That((await admin.Resharding.GetMovesAsync()).Single().State, Is.EqualTo(MoveState.Cancelled));
        await MoveTests.AssertPlacedAsync(shards, admin, truth);
        Assert.That(admin.Map.Buckets!.BucketsOf(0), Is.SupersetOf(buckets), "the buckets stay on the source");
    }

    // A cancel in the announce wait, before the mover took the run lock: the mover then finds the move cancelled and does
    // nothing (before, its next state overwrote "Cancelled" and it moved the buckets after all).
    [Test]
    public async Task A_move_cancelled_before_it_starts_its_steps_does_not_run_them()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 500);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(4).ToArray();

        var move = CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1",
            new MoveOptions { AnnounceWait = TimeSpan.FromSeconds(3), CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero }));
        var other = shards.NewSource();
        MoveInfo? recorded = null;
        for (var i = 0; i < 100 && recorded is null; i++)
        {
            recorded = (await other.Resharding.GetMovesAsync()).SingleOrDefault();
            await Task.Delay(20);
        }

        Assert.That(recorded, Is.Not.Null, "the move was not recorded within 2 s");
        await other.Resharding.CancelMoveAsync(recorded!.MoveId);
        var error = await move.WaitAsync(TimeSpan.FromMinutes(1));

        Assert.That(error, Is.InstanceOf<ShardMoveException>());
        Assert.That(error!.Message, Does.Contain("Cancelled"));
        Assert.That((await admin.Resharding.GetMovesAsync()).Single().State, Is.EqualTo(MoveState.Cancelled));
        await MoveTests.AssertPlacedAsync(shards, admin, truth);
        Assert.That(admin.Map.Buckets!.BucketsOf(0), Is.SupersetOf(buckets));
    }

    // A cancel that gave up after dropping the slot (its token, or the mover did not stop in time) left a move no resume
    // could take up ("slot missing … start the move again"). A resume now copies again from a new slot while the source
    // still owns the buckets; the rows written meanwhile arrive.
    [Test]
    public async Task A_move_whose_slot_is_gone_resumes_by_copying_again()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 1000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(8).ToArray();
        using var stop = new StopOnDispose();
        string? id = null;
        var stopped = await CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1",
            new MoveOptions { AnnounceWait = TimeSpan.Zero, CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero },
            new InlineProgress(p =>
            {
                id = p.MoveId;
                if (p.State == MoveState.CatchingUp)
                {
                    stop.Cancel();
                }
            }), stop.Token));
        Assert.That(stopped, Is.InstanceOf<OperationCanceledException>(), "the move stopped in catch-up by its token");
        Assert.That(await shards.ScalarAsync<long>(0, $"select count(pg_drop_replication_slot(slot_name)) from pg_replication_slots where slot_name = 'shardkit_move_{id}'"),
            Is.EqualTo(1));

        await using (var db = admin.CreateConnection())
        {
            foreach (var key in truth.Keys.Where(k => buckets.Contains(admin.Map.BucketOf(k))).Take(20).ToList())
            {
                await db.ExecuteAsync("update items set n = n + 1000 where id = @Id", new Item { Id = key });
                truth[key] += 1000;
            }
        }

        var result = await admin.Resharding.ResumeMoveAsync(id!, new MoveOptions { CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero });

        Assert.That(result.Buckets, Is.EqualTo(buckets));
        Assert.That((await admin.Resharding.GetMovesAsync()).Single().State, Is.EqualTo(MoveState.Done));
        await MoveTests.AssertPlacedAsync(shards, admin, truth);
        Assert.That(admin.Map.Buckets!.BucketsOf(1), Is.SupersetOf(buckets));
    }

    // A move stopped by an error the server gives again (a missing privilege, a refused definition) says to fix it before
    // a resume; a broken connection or a shutdown says to resume.
    [TestCase(PostgresErrorCodes.InsufficientPrivilege, true)]
    [TestCase(PostgresErrorCodes.FeatureNotSupported, true)]
    [TestCase(PostgresErrorCodes.InvalidObjectDefinition, true)]
    [TestCase(PostgresErrorCodes.AdminShutdown, false)]
    [TestCase(PostgresErrorCodes.DeadlockDetected, false)]
    [TestCase(PostgresErrorCodes.UndefinedObject, false)]
    public void An_error_the_server_gives_again_is_told_apart_from_a_passing_one(string sqlState, bool deterministic)
    {
        var error = new PostgresException("refused", "ERROR", "ERROR", sqlState);
        Assert.That(BucketMover.Deterministic(new InvalidOperationException("wrapped", error)), Is.EqualTo(deterministic));
        Assert.That(BucketMover.Deterministic(new TimeoutException()), Is.False);
    }
}

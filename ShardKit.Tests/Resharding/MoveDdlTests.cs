using Dapper;
using Npgsql;

namespace ShardKit.Tests.Resharding;

/// <summary>Tables created on a move's source while its replication slot decodes there.</summary>
[TestFixture]
public sealed class MoveDdlTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    // Two moves at once under writers with distributed transactions stopped, 1 run in 4, in catch-up with PostgreSQL's
    // "could not map filenode … to relation OID" (a resume replayed the same WAL): the writers' first distributed
    // transaction created the decision log on the source while the slots were made. The move makes it before its slot.
    [Test]
    public async Task A_move_creates_the_two_phase_decision_log_on_both_shards_before_its_slot()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        await MoveTests.SeedRowsAsync(admin, 200);
        const string Exists = "select to_regclass('shardkit_2pc_decisions') is not null";
        Assume.That(await shards.ScalarAsync<bool>(0, Exists) || await shards.ScalarAsync<bool>(1, Exists), Is.False, "a fresh database has no decision log");
        var slotMade = new TaskCompletionSource<bool[]>(TaskCreationOptions.RunContinuationsAsynchronously);

        await admin.Resharding.MoveBucketsAsync(admin.Map.Buckets!.BucketsOf(0).Take(2).ToArray(), "s1",
            new MoveOptions { CleanupDelay = TimeSpan.Zero, AnnounceWait = TimeSpan.Zero, DeletePause = TimeSpan.Zero },
            new InlineProgress(p =>
            {
                if (p.State == MoveState.Copying && !slotMade.Task.IsCompleted)
                {
                    slotMade.TrySetResult([shards.ScalarAsync<bool>(0, Exists).GetAwaiter().GetResult(), shards.ScalarAsync<bool>(1, Exists).GetAwaiter().GetResult()]);
                }
            }));

        Assert.That(await slotMade.Task, Is.EqualTo(new[] { true, true }), "the decision log on s0 and s1 once the slot was made");
    }

    // The error a move stopped this way is told apart: a resume then drops the slot and copies again from a new one (the
    // old slot's WAL fails the same way each time); PostgreSQL 16
    // and later say "filenumber".
    [TestCase("could not map filenode \"base/16384/16390\" to relation OID", true)]
    [TestCase("could not map filenumber \"base/16384/16390\" to relation OID", true)]
    [TestCase("cache lookup failed for relation 16390", false)]
    public void A_decoding_error_for_a_table_it_cannot_name_is_told_apart(string message, bool undecodable)
    {
        var error = new PostgresException(message, "ERROR", "ERROR", PostgresErrorCodes.InternalError);
        Assert.That(BucketMover.UndecodableTable(new InvalidOperationException("wrapped", error)), Is.EqualTo(undecodable));
        Assert.That(BucketMover.UndecodableTable(new PostgresException(message, "ERROR", "ERROR", PostgresErrorCodes.InsufficientPrivilege)), Is.False);
    }

    [Test]
    public async Task A_table_created_on_the_source_while_the_slot_is_made_and_written_after()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 1000);
        await using var ddl = await shards.OpenAsync(0);
        await ddl.ExecuteAsync("begin; create table made_during_move (id int primary key); insert into made_during_move values (0)");
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(4).ToArray();
        var move = admin.Resharding.MoveBucketsAsync(buckets, "s1",
            new MoveOptions { CleanupDelay = TimeSpan.Zero, AnnounceWait = TimeSpan.Zero, DeletePause = TimeSpan.Zero });
        // The slot waits for the open transaction to end before it is made.
        await Task.Delay(1500);
        await ddl.ExecuteAsync("commit");
        await ddl.ExecuteAsync("insert into made_during_move select g from generate_series(1, 10) g");

        var result = await move.WaitAsync(TimeSpan.FromMinutes(2));

        Assert.That(result.Buckets, Is.EqualTo(buckets));
        await MoveTests.AssertPlacedAsync(shards, admin, truth);
    }
}

using Dapper;
using Npgsql;

namespace ShardKit.Tests.Resharding;

/// <summary>
/// The freeze's lock statement on a real fence: a try that does not wait takes every moving bucket's ownership row or
/// none, and a try that missed holds nothing while the mover decides what to do next (before, it kept the rows locked
/// ahead of the taken one until its rollback, a round trip later, and their writers waited).
/// </summary>
[TestFixture]
public sealed class FreezeLockTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    private const string Buckets = "array[1,5]::int[]";

    private static Task<object[]?> TryAsync(NpgsqlConnection connection, bool wait, bool afterMiss) =>
        BucketMover.TryLockAsync(connection, BucketMover.LockSql(Buckets, "count(*)", wait, afterMiss, TimeSpan.FromSeconds(5)), 1, CancellationToken.None);

    // A writer's share lock on the bucket's row, as shardkit.check_buckets takes it, held until the transaction ends.
    private static async Task<NpgsqlTransaction> HoldAsync(NpgsqlConnection connection, int bucket, string mode = "for share", string lockTimeout = "5s")
    {
        var transaction = await connection.BeginTransactionAsync();
        await connection.ExecuteAsync($"set local lock_timeout = '{lockTimeout}'; select 1 from shardkit.bucket_owner where bucket = {bucket} {mode}",
            transaction: transaction);
        return transaction;
    }

    private static async Task<ReshardingShards> SeededAsync()
    {
        var shards = await ReshardingShards.CreateAsync(2);
        await using var seeding = shards.NewSource();
        await seeding.Resharding.SeedAsync([Items]);
        return shards;
    }

    [Test]
    public async Task A_try_that_meets_a_writer_holds_no_row_and_the_next_takes_them_all()
    {
        await using var shards = await SeededAsync();
        await using var writer = await shards.OpenAsync(0);
        await using var mover = await shards.OpenAsync(0);
        await using var other = await shards.OpenAsync(0);

        // A writer of bucket 5 (the last the statement locks) is in its transaction: the try misses.
        var writing = await HoldAsync(writer, 5);
        Assert.That(await TryAsync(mover, wait: false, afterMiss: false), Is.Null, "a writer holds bucket 5");

        // The miss gave back bucket 1, which it had locked before it met bucket 5: another writer takes it for update at
        // once (a lock the mover still held would make this wait out its lock_timeout and fail).
        var first = await HoldAsync(other, 1, "for update", lockTimeout: "200ms");
        await first.RollbackAsync();
        await writing.CommitAsync();

        // The next try rolls the missed one back in its own round trip and takes both rows.
        var row = await TryAsync(mover, wait: false, afterMiss: true);
        Assert.That(row, Is.Not.Null);
        Assert.That(row![0], Is.EqualTo(2L), "both buckets' rows");

        // Now the writers wait: a share lock that does not wait is refused while the mover holds the rows.
        var refused = Assert.ThrowsAsync<PostgresException>(async () => await HoldAsync(other, 1, "for share nowait"));
        Assert.That(refused!.SqlState, Is.EqualTo(PostgresErrorCodes.LockNotAvailable));
        await mover.ExecuteAsync("rollback");
    }

    [Test]
    public async Task The_try_that_waits_takes_the_rows_once_the_writer_is_done_and_a_timeout_is_an_error()
    {
        await using var shards = await SeededAsync();
        await using var writer = await shards.OpenAsync(0);
        await using var mover = await shards.OpenAsync(0);

        var writing = await HoldAsync(writer, 5);
        var waiting = BucketMover.TryLockAsync(mover, BucketMover.LockSql(Buckets, "count(*)", wait: true, afterMiss: true, TimeSpan.FromSeconds(30)), 1,
            CancellationToken.None);
        await Task.Delay(200);
        Assert.That(waiting.IsCompleted, Is.False, "the try that waits waits for the writer");
        await writing.CommitAsync();
        Assert.That((await waiting)![0], Is.EqualTo(2L));
        await mover.ExecuteAsync("rollback");

        // Past its lock_timeout the waiting try fails as a statement (the mover rolls back and catches up again).
        writing = await HoldAsync(writer, 5);
        var timedOut = Assert.ThrowsAsync<PostgresException>(() =>
            BucketMover.TryLockAsync(mover, BucketMover.LockSql(Buckets, "count(*)", wait: true, afterMiss: false, TimeSpan.FromMilliseconds(100)), 1,
                CancellationToken.None));
        Assert.That(timedOut!.SqlState, Is.EqualTo(PostgresErrorCodes.LockNotAvailable));
        await writing.RollbackAsync();
    }
}

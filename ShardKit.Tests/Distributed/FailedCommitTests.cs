using Npgsql;
using Row = ShardKit.Tests.Distributed.DistributedShards.Row;

namespace ShardKit.Tests.Distributed;

/// <summary>
/// A distributed transaction whose commit fails (a statement in it failed, a step broke, a rollback was cancelled): the
/// commit says so with a typed error, and the connection is usable again with no session left inside a transaction.
/// </summary>
public sealed class FailedCommitTests
{
    private static string Insert(DistributedShards s) => $"insert into {s.Table} values (@CustomerId, @Id)";

    [TestCase(1)]
    [TestCase(2)]
    public async Task Commit_after_a_failed_statement_throws_names_the_shard_and_says_nothing_was_committed(int touchedShards)
    {
        await using var s = await UniqueIdsAsync();
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await InsertThenFailOnLastShardAsync(s, db, touchedShards);

        var error = Assert.ThrowsAsync<ShardAggregateException>(() => tx.CommitAsync());

        var failedShard = s.Names[touchedShards - 1];
        Assert.That(error!.FailedShards, Is.EqualTo(new[] { failedShard }));
        var cause = error.InnerExceptions.Single();
        Assert.That(cause, Is.TypeOf<ShardKitException>());
        Assert.That(cause.Message, Does.Contain($"'{failedShard}'").And.Contain("a command in it raised an error")
            .And.Contain("Nothing was committed"));
        Assert.That(cause.InnerException, Is.TypeOf<PostgresException>().With.Property("SqlState").EqualTo(PostgresErrorCodes.InFailedSqlTransaction));
        Assert.That(await s.CountsAsync(), Is.All.Zero);
        Assert.That(await s.PreparedAsync(), Is.Empty);
        Assert.That(db.CurrentDistributedTransaction, Is.Null);
    }

    [TestCase(1)]
    [TestCase(2)]
    public async Task After_a_failed_commit_no_session_stays_in_a_transaction_and_the_connection_reads_and_commits_again(int touchedShards)
    {
        await using var s = await UniqueIdsAsync();
        await using var db = s.Source.CreateConnection();
        int[] pids;
        await using (var tx = await db.BeginDistributedTransactionAsync())
        {
            pids = await InsertThenFailOnLastShardAsync(s, db, touchedShards);
            Assert.ThrowsAsync<ShardAggregateException>(() => tx.CommitAsync());

            for (var shard = 0; shard < touchedShards; shard++)
            {
                Assert.That(await s.SessionStateAsync(shard, pids[shard]), Is.Null.Or.Not.StartWith("idle in transaction"),
                    $"shard {shard}'s session ended its transaction and released its locks");
            }
        }

        await AssertUsableAsync(s, db, touchedShards);
    }

    [Test]
    public async Task A_one_shard_commit_the_server_refuses_throws_the_same_aggregate_with_the_server_error_inside()
    {
        await using var s = await DistributedShards.SharedAsync(2);
        await s.OnEveryShardAsync($"alter table {s.Table} add unique (id) deferrable initially deferred");
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), new[] { new Row { CustomerId = s.KeyOn(1), Id = 7 }, new Row { CustomerId = s.KeyOn(1, 1), Id = 7 } });

        var error = Assert.ThrowsAsync<ShardAggregateException>(() => tx.CommitAsync());

        Assert.That(error!.FailedShards, Is.EqualTo(new[] { s.Names[1] }));
        Assert.That(error.InnerExceptions.Single(), Is.TypeOf<PostgresException>().With.Property("SqlState").EqualTo(PostgresErrorCodes.UniqueViolation));
        Assert.That(await s.CountsAsync(), Is.All.Zero);
        await AssertUsableAsync(s, db, 2);
    }

    [Test]
    public async Task A_commit_that_breaks_before_preparing_a_shard_leaves_no_session_in_a_transaction()
    {
        await using var s = await UniqueIdsAsync();
        s.Source.OnDistributedStep = (step, shard) =>
            step == DistributedStep.PrepareShard && shard == s.Names[1] ? throw new IOException("injected") : Task.CompletedTask;
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), new[] { new Row { CustomerId = s.KeyOn(0), Id = 1 }, new Row { CustomerId = s.KeyOn(1), Id = 2 } });
        var pid = await db.OnShard(s.Names[1]).ExecuteScalarAsync<int>("select pg_backend_pid()");

        var error = Assert.ThrowsAsync<ShardAggregateException>(() => tx.CommitAsync());

        Assert.That(error!.FailedShards, Is.EqualTo(new[] { s.Names[1] }));
        Assert.That(await s.SessionStateAsync(1, pid), Is.Null.Or.Not.StartWith("idle in transaction"));
        s.Source.OnDistributedStep = null;
        await AssertUsableAsync(s, db, 2);
    }

    [Test]
    public async Task A_cancelled_rollback_still_ends_the_transaction_on_every_shard()
    {
        await using var s = await UniqueIdsAsync();
        await using var db = s.Source.CreateConnection();
        var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), new[] { new Row { CustomerId = s.KeyOn(0), Id = 1 }, new Row { CustomerId = s.KeyOn(1), Id = 2 } });
        var pids = new[] { await PidAsync(db, s, 0), await PidAsync(db, s, 1) };

        Assert.ThrowsAsync(Is.InstanceOf<OperationCanceledException>(), () => tx.RollbackAsync(new CancellationToken(canceled: true)));

        Assert.That(await s.SessionStateAsync(0, pids[0]), Is.Null.Or.Not.StartWith("idle in transaction"));
        Assert.That(await s.SessionStateAsync(1, pids[1]), Is.Null.Or.Not.StartWith("idle in transaction"));
        Assert.That(await s.CountsAsync(), Is.All.Zero);
        await AssertUsableAsync(s, db, 2);
    }

    // A table with unique ids, so inserting an id twice on one shard fails there.
    private static async Task<DistributedShards> UniqueIdsAsync()
    {
        var s = await DistributedShards.SharedAsync(2);
        await s.OnEveryShardAsync($"create unique index on {s.Table} (id)");
        return s;
    }

    // Inserts on the first touchedShards shards, then a duplicate id on the last one; returns each shard's backend pid.
    private static async Task<int[]> InsertThenFailOnLastShardAsync(DistributedShards s, ShardedConnection db, int touchedShards)
    {
        var pids = new int[touchedShards];
        for (var shard = 0; shard < touchedShards; shard++)
        {
            await db.ExecuteAsync(Insert(s), new Row { CustomerId = s.KeyOn(shard), Id = 10 + shard });
            pids[shard] = await PidAsync(db, s, shard);
        }

        var last = touchedShards - 1;
        var duplicate = Assert.ThrowsAsync<PostgresException>(() =>
            db.ExecuteAsync(Insert(s), new Row { CustomerId = s.KeyOn(last, 1), Id = 10 + last }));
        Assert.That(duplicate!.SqlState, Is.EqualTo(PostgresErrorCodes.UniqueViolation));
        return pids;
    }

    private static Task<int> PidAsync(ShardedConnection db, DistributedShards s, int shard) =>
        db.OnShard(s.Names[shard]).ExecuteScalarAsync<int>("select pg_backend_pid()");

    private static async Task AssertUsableAsync(DistributedShards s, ShardedConnection db, int touchedShards)
    {
        var last = touchedShards - 1;
        var read = await db.QueryAsync<Row>($"select customer_id, id from {s.Table} where customer_id = @CustomerId", new { CustomerId = s.KeyOn(last) });
        Assert.That(read, Is.Empty, "a routed read on the failed shard works");

        await using var again = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), Enumerable.Range(0, touchedShards).Select(shard => new Row { CustomerId = s.KeyOn(shard), Id = 20 + shard }));
        var result = await again.CommitAsync();

        Assert.That(result.Shards, Is.EqualTo(s.Names.Take(touchedShards)));
        Assert.That((await s.CountsAsync()).Take(touchedShards), Is.All.EqualTo(1));
    }
}

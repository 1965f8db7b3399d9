using Dapper;
using Npgsql;
using Row = ShardKit.Tests.Distributed.DistributedShards.Row;

namespace ShardKit.Tests.Distributed;

/// <summary>
/// Two distributed transactions that lock rows on two shards in opposite order wait for each other across servers,
/// where no PostgreSQL deadlock detector sees the cycle. The lock wait bound breaks it with a typed, retryable error.
/// </summary>
public sealed class DistributedLockTimeoutTests
{
    // Generous: the test only has to prove it did not wait for the 30 s command timeout or forever.
    private static readonly TimeSpan DidNotHang = TimeSpan.FromMinutes(2);

    private static Task<int> LockAsync(DistributedShards s, ShardedConnection db, int shard, CancellationToken cancellationToken) =>
        db.ForKey(s.KeyOn(shard)).ExecuteAsync(new CommandDefinition($"update {s.Table} set id = id where customer_id = @CustomerId",
            new { CustomerId = s.KeyOn(shard) }, cancellationToken: cancellationToken));

    [Test]
    public async Task Two_transactions_locking_two_shards_in_opposite_order_fail_one_with_a_retryable_error_and_commit_the_other()
    {
        await using var s = await DistributedShards.SharedAsync(2, o => o.LockTimeout = TimeSpan.FromMilliseconds(300));
        await using var patient = DistributedShards.Create(s.Direct, s.Names, s.Table, [], ownsResources: false, o => o.LockTimeout = null);
        using var bound = new CancellationTokenSource(DidNotHang);
        await using var first = s.Source.CreateConnection();
        await using var second = patient.Source.CreateConnection();
        await first.ExecuteAsync($"insert into {s.Table} values (@CustomerId, @Id)",
            new[] { new Row { CustomerId = s.KeyOn(0), Id = 1 }, new Row { CustomerId = s.KeyOn(1), Id = 2 } });

        await using var firstTx = await first.BeginDistributedTransactionAsync();
        await using var secondTx = await second.BeginDistributedTransactionAsync();
        await LockAsync(s, first, 0, bound.Token);
        await LockAsync(s, second, 1, bound.Token);
        var secondWaits = LockAsync(s, second, 0, bound.Token);

        var error = Assert.ThrowsAsync<DistributedLockTimeoutException>(() => LockAsync(s, first, 1, bound.Token));

        Assert.That(error!.Shard, Is.EqualTo(s.Names[1]));
        Assert.That(error.IsRetryable, Is.True);
        Assert.That(error.LockTimeout, Is.EqualTo(TimeSpan.FromMilliseconds(300)));
        Assert.That(error.Message, Does.Contain($"'{s.Names[1]}'").And.Contain("roll it back").And.Contain("retry the whole transaction"));
        Assert.That(error.InnerException, Is.TypeOf<PostgresException>().With.Property("SqlState").EqualTo(PostgresErrorCodes.LockNotAvailable));
        Assert.That(secondWaits.IsCompleted, Is.False, "the other transaction still waits for the first one's lock");

        await firstTx.RollbackAsync(bound.Token);
        Assert.That(await secondWaits.WaitAsync(bound.Token), Is.EqualTo(1));
        var committed = await secondTx.CommitAsync(bound.Token);
        Assert.That(committed.Shards, Is.EqualTo(s.Names));
    }

    [Test]
    public async Task The_lock_wait_bound_applies_inside_distributed_transactions_only_and_can_be_turned_off()
    {
        await using var s = await DistributedShards.SharedAsync(2, o => o.LockTimeout = TimeSpan.FromSeconds(2));
        await using var off = DistributedShards.Create(s.Direct, s.Names, s.Table, [], ownsResources: false, o => o.LockTimeout = TimeSpan.Zero);
        await using var db = s.Source.CreateConnection();
        await using var unbounded = off.Source.CreateConnection();
        var shard = s.Names[1];

        await using (var tx = await db.BeginDistributedTransactionAsync())
        {
            Assert.That(await db.OnShard(shard).ExecuteScalarAsync<string>("show lock_timeout"), Is.EqualTo("2s"));
            await tx.CommitAsync();
        }

        using (var tx = db.BeginDistributedTransaction())
        {
            Assert.That(db.OnShard(s.Names[0]).ExecuteScalar<string>("show lock_timeout"), Is.EqualTo("2s"), "the synchronous path too");
        }

        Assert.That(await db.OnShard(shard).ExecuteScalarAsync<string>("show lock_timeout"), Is.EqualTo("0"), "outside, the session is untouched");
        await using (await unbounded.BeginDistributedTransactionAsync())
        {
            Assert.That(await unbounded.OnShard(shard).ExecuteScalarAsync<string>("show lock_timeout"), Is.EqualTo("0"));
        }
    }

    // The first write on a shard carries the bound in its own round trip (issue 15.3): each path that carries it, and
    // the paths that cannot (a dollar sign in the text), must leave the bound in force and report their own results.
    [Test]
    public async Task A_first_write_that_carries_the_bound_applies_it_and_reports_its_own_affected_rows()
    {
        await using var s = await DistributedShards.SharedAsync(2, o => o.LockTimeout = TimeSpan.FromSeconds(2));
        await using var db = s.Source.CreateConnection();
        string Bound(int shard) => db.OnShard(s.Names[shard]).ExecuteScalar<string>("show lock_timeout")!;

        await using (var tx = await db.BeginDistributedTransactionAsync())
        {
            var one = await db.ForKey(s.KeyOn(0)).ExecuteAsync($"insert into {s.Table} values (@CustomerId, @Id)", new Row { CustomerId = s.KeyOn(0), Id = 1 });
            var items = await db.ExecuteAsync($"insert into {s.Table} values (@CustomerId, @Id)",
                new[] { new Row { CustomerId = s.KeyOn(1), Id = 2 }, new Row { CustomerId = s.KeyOn(1, 1), Id = 3 } });
            Assert.That((one, items), Is.EqualTo((1, 2)), "the carried SET adds no affected rows");
            Assert.That((Bound(0), Bound(1)), Is.EqualTo(("2s", "2s")));
            await tx.CommitAsync();
        }

        await using (var tx = await db.BeginDistributedTransactionAsync())
        {
            var dollar = await db.ForKey(s.KeyOn(0)).ExecuteAsync($"update {s.Table} set id = id where customer_id = @CustomerId and $$x$$ = 'x'",
                new { CustomerId = s.KeyOn(0) });
            Assert.That(dollar, Is.EqualTo(1));
            Assert.That(Bound(0), Is.EqualTo("2s"), "text that cannot carry it gets the bound in a round trip of its own");
            await tx.RollbackAsync();
        }

        Assert.That(await db.OnShard(s.Names[0]).ExecuteScalarAsync<long>($"select count(*) from {s.Table}"), Is.EqualTo(1));
    }

    [Test]
    public async Task A_refused_item_in_a_first_batch_that_carries_the_bound_is_named_by_its_own_position()
    {
        await using var s = await DistributedShards.SharedAsync(2, o => o.LockTimeout = TimeSpan.FromSeconds(2));
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        var items = new[]
        {
            new Row { CustomerId = s.KeyOn(1), Id = 1 },
            new Row { CustomerId = s.KeyOn(1, 1), Id = 0 }, // 100 / 0 on the server
            new Row { CustomerId = s.KeyOn(1, 2), Id = 2 },
        };

        var failed = Assert.ThrowsAsync<BroadcastWriteException>(() => db.ExecuteAsync($"insert into {s.Table} values (@CustomerId, 100 / @Id)", items));

        var error = failed!.Failures.Single().Error as BatchItemException;
        Assert.That((error?.ItemIndex, error?.Shard), Is.EqualTo(((int?)1, s.Names[1])), "the setup statement in front is no item");
        Assert.That(error!.InnerException, Is.TypeOf<PostgresException>().With.Property("SqlState").EqualTo(PostgresErrorCodes.DivisionByZero));
    }

    [Test]
    public void A_negative_lock_timeout_is_refused_with_the_option_named()
    {
        var error = Assert.Throws<ShardConfigurationException>(() => new ShardedDataSourceBuilder().AddShard("a", "Host=localhost")
            .UseDistributedTransactions(o => o.LockTimeout = TimeSpan.FromSeconds(-1)).Build());

        Assert.That(error!.Errors, Has.Some.Contains("DistributedTransactionOptions.LockTimeout"));
        var options = new ShardKitOptions();
        options.Shards.Add(new ShardOptions { Name = "a", ConnectionString = "Host=localhost" });
        options.DistributedTransactions.LockTimeout = TimeSpan.FromMilliseconds(-1);
        Assert.That(new ShardKitOptionsValidator().Validate(null, options).Failures, Has.Some.Contains("LockTimeout must be between zero"));
        Assert.That(new DistributedTransactionOptions().LockTimeout, Is.EqualTo(TimeSpan.FromSeconds(5)));
    }
}

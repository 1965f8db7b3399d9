using Npgsql;
using Row = ShardKit.Tests.Distributed.DistributedShards.Row;

namespace ShardKit.Tests.Distributed;

public sealed class DistributedTransactionTests
{
    private static string Insert(DistributedShards s) => $"insert into {s.Table} values (@CustomerId, @Id)";

    [TestCase(2)]
    [TestCase(4)]
    public async Task Commit_across_shards_prepares_the_others_commits_the_coordinator_with_its_decision_and_lands_everywhere(int shardCount)
    {
        await using var s = await DistributedShards.SharedAsync(shardCount);
        var steps = new List<(DistributedStep Step, string? Shard)>();
        s.Source.OnDistributedStep = (step, shard) =>
        {
            lock (steps)
            {
                steps.Add((step, shard));
            }

            return Task.CompletedTask;
        };
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        for (var shard = 0; shard < shardCount; shard++)
        {
            await db.ExecuteAsync(Insert(s), new Row { CustomerId = s.KeyOn(shard), Id = shard });
        }

        var result = await tx.CommitAsync();

        Assert.That(result.UsedTwoPhaseCommit, Is.True);
        Assert.That(result.IsComplete, Is.True);
        Assert.That(result.Shards, Is.EqualTo(s.Names));
        Assert.That(result.GlobalId, Does.StartWith($"shardkit:{s.Names[0]}:"));
        Assert.That(await s.CountsAsync(), Is.All.EqualTo(1));
        Assert.That(await s.PreparedAsync(), Is.Empty);
        Assert.That(await s.DecisionsAsync(), Is.EqualTo(new[] { (result.GlobalId!, "commit") }));
        var others = s.Names.Skip(1).ToArray();
        Assert.That(steps.Where(st => st.Step == DistributedStep.PrepareShard).Select(st => st.Shard!).Order(), Is.EqualTo(others),
            "every shard but the coordinator is prepared; the coordinator commits its own part with the decision");
        Assert.That(steps.Where(st => st.Step == DistributedStep.CommitPreparedShard).Select(st => st.Shard!).Order(), Is.EqualTo(others));
        Assert.That(db.CurrentDistributedTransaction, Is.Null);

        var report = await s.Source.RecoverAsync();
        Assert.That(report.DecisionsCleaned, Is.EqualTo(1), "the finished decision is removed by recovery");
        Assert.That(await s.DecisionsAsync(), Is.Empty);
    }

    [Test]
    public async Task One_touched_shard_commits_plainly_with_no_prepare_and_no_decision()
    {
        await using var s = await DistributedShards.SharedAsync(2);
        var hooked = 0;
        s.Source.OnDistributedStep = (_, _) =>
        {
            Interlocked.Increment(ref hooked);
            return Task.CompletedTask;
        };
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), new[] { new Row { CustomerId = s.KeyOn(1), Id = 1 }, new Row { CustomerId = s.KeyOn(1, 1), Id = 2 } });

        var result = await tx.CommitAsync();

        Assert.That(result.UsedTwoPhaseCommit, Is.False);
        Assert.That(result.Shards, Is.EqualTo(new[] { s.Names[1] }));
        Assert.That(hooked, Is.Zero, "no two-phase step ran");
        Assert.That(await s.CountsAsync(), Is.EqualTo(new long[] { 0, 2 }));
        Assert.That(await s.PreparedAsync(), Is.Empty);
        Assert.That(await s.DecisionsAsync(), Is.Empty);
    }

    [Test]
    public async Task Rollback_discards_the_work_on_every_shard()
    {
        await using var s = await DistributedShards.SharedAsync(3);
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), Enumerable.Range(0, 3).Select(i => new Row { CustomerId = s.KeyOn(i), Id = i }));
        Assert.That(tx.Shards, Is.EqualTo(s.Names));

        await tx.RollbackAsync();

        Assert.That(await s.CountsAsync(), Is.All.Zero);
        Assert.That(await s.PreparedAsync(), Is.Empty);
        Assert.ThrowsAsync<InvalidOperationException>(() => tx.CommitAsync());
    }

    [Test]
    public async Task Disposing_without_commit_rolls_back_and_the_connection_works_afterwards()
    {
        await using var s = await DistributedShards.SharedAsync(2);
        await using var db = s.Source.CreateConnection();
        await using (await db.BeginDistributedTransactionAsync())
        {
            await db.ExecuteAsync(Insert(s), new[] { new Row { CustomerId = s.KeyOn(0), Id = 1 }, new Row { CustomerId = s.KeyOn(1), Id = 2 } });
        }

        using (db.BeginDistributedTransaction())
        {
            await db.ExecuteAsync(Insert(s), new[] { new Row { CustomerId = s.KeyOn(0), Id = 3 }, new Row { CustomerId = s.KeyOn(1), Id = 4 } });
            // synchronous dispose, no commit
        }

        Assert.That(await s.CountsAsync(), Is.All.Zero);
        await db.ExecuteAsync(Insert(s), new Row { CustomerId = s.KeyOn(1), Id = 5 });
        Assert.That(await s.CountsAsync(), Is.EqualTo(new long[] { 0, 1 }), "outside a transaction each command commits by itself");
    }

    [Test]
    public async Task Commands_inside_route_by_key_scopes_and_split_key_lists_and_see_their_own_writes()
    {
        await using var s = await DistributedShards.SharedAsync(3);
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ForKey(s.KeyOn(0)).ExecuteAsync(Insert(s), new { CustomerId = s.KeyOn(0), Id = 1 });
        await db.OnShard(s.Names[1]).ExecuteAsync(Insert(s), new { CustomerId = s.KeyOn(1), Id = 2 });
        await db.ExecuteAsync(Insert(s), new Row { CustomerId = s.KeyOn(2), Id = 3 });

        var seen = await db.QueryAsync<Row>($"select customer_id, id from {s.Table} where customer_id = any(@CustomerId)",
            new { CustomerId = new[] { s.KeyOn(0), s.KeyOn(1), s.KeyOn(2) } });
        Assert.That(seen.Select(r => r.Id).Order(), Is.EqualTo(new long[] { 1, 2, 3 }), "each shard's command runs inside its transaction");
        Assert.That(await s.CountsAsync(), Is.All.Zero, "nothing is visible outside before commit");
        Assert.ThrowsAsync<ShardRoutingException>(() => db.ExecuteAsync($"delete from {s.Table}"), "a command with no key still needs one");
        Assert.ThrowsAsync<InvalidOperationException>(() => db.ForKey(1L).BeginTransactionAsync());
        Assert.ThrowsAsync<InvalidOperationException>(() => db.BeginDistributedTransactionAsync());

        await tx.CommitAsync();
        Assert.That(await s.CountsAsync(), Is.All.EqualTo(1));
    }

    [Test]
    public async Task A_failed_command_on_one_shard_makes_commit_roll_back_everywhere_and_name_the_shard()
    {
        await using var s = await DistributedShards.SharedAsync(2);
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), new Row { CustomerId = s.KeyOn(0), Id = 1 });
        await db.ExecuteAsync(Insert(s), new Row { CustomerId = s.KeyOn(1), Id = 2 });
        Assert.ThrowsAsync<PostgresException>(() => db.OnShard(s.Names[1]).ExecuteAsync("select 1/0"));

        var error = Assert.ThrowsAsync<ShardAggregateException>(() => tx.CommitAsync());

        Assert.That(error!.FailedShards, Is.EqualTo(new[] { s.Names[1] }));
        Assert.That(error.Message, Does.Contain("already failed"));
        Assert.That(await s.CountsAsync(), Is.All.Zero);
        Assert.That(await s.PreparedAsync(), Is.Empty, "the shard that did prepare was rolled back");
        Assert.That(await s.DecisionsAsync(), Is.Empty);
    }

    [Test]
    public async Task The_coordinator_is_configurable_and_named_in_the_global_id()
    {
        await using var s = await DistributedShards.SharedAsync(3, o => o.CoordinatorShard = null);
        await using var other = DistributedShards.Create(s.Direct, s.Names, s.Table, [], ownsResources: false, o => o.CoordinatorShard = s.Names[2]);
        await using var db = other.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), new[] { new Row { CustomerId = s.KeyOn(0), Id = 1 }, new Row { CustomerId = s.KeyOn(1), Id = 2 } });

        var result = await tx.CommitAsync();

        Assert.That(result.GlobalId, Does.StartWith($"shardkit:{s.Names[2]}:"));
        Assert.That(await s.DecisionsAsync(coordinator: 2), Has.Count.EqualTo(1));
        Assert.That(await s.DecisionsAsync(coordinator: 0), Is.Empty);
        var error = Assert.Throws<ShardConfigurationException>(() => new ShardedDataSourceBuilder().AddShard("a", s.Direct[0])
            .UseDistributedTransactions(o => o.CoordinatorShard = "nope").Build());
        Assert.That(error!.Message, Does.Contain("'nope'").And.Contain("a"));
        await other.Source.RecoverAsync();
    }

    [Test]
    public async Task A_connection_lost_inside_the_transaction_is_reported_and_commit_rolls_back_everywhere()
    {
        await using var s = await DistributedShards.SharedAsync(2, proxied: true);
        await using var db = s.Source.CreateConnection();
        db.Retries = ShardRetryOptions.None;
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), new[] { new Row { CustomerId = s.KeyOn(0), Id = 1 }, new Row { CustomerId = s.KeyOn(1), Id = 2 } });
        Abandon.Crash(s); // resets every open connection, then accepts new ones

        Assert.ThrowsAsync(Is.InstanceOf<ShardConnectionException>(), () => db.ExecuteAsync(Insert(s), new Row { CustomerId = s.KeyOn(1), Id = 3 }));
        var lost = Assert.ThrowsAsync<ShardKitException>(() => db.ExecuteAsync(Insert(s), new Row { CustomerId = s.KeyOn(1), Id = 4 }));
        Assert.That(lost!.Message, Does.Contain($"'{s.Names[1]}'").And.Contain("lost inside the distributed transaction"));
        Assert.ThrowsAsync<ShardAggregateException>(() => tx.CommitAsync());

        Assert.That(await s.CountsAsync(), Is.All.Zero);
        Assert.That(await s.PreparedAsync(), Is.Empty);
    }

    [Test]
    public async Task Cancelling_before_the_decision_rolls_back_everywhere()
    {
        await using var s = await DistributedShards.SharedAsync(2);
        using var cancel = new CancellationTokenSource();
        s.Source.OnDistributedStep = (step, _) =>
        {
            if (step == DistributedStep.BeforeDecision)
            {
                cancel.Cancel();
            }

            return Task.CompletedTask;
        };
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert(s), new[] { new Row { CustomerId = s.KeyOn(0), Id = 1 }, new Row { CustomerId = s.KeyOn(1), Id = 2 } });

        Assert.ThrowsAsync(Is.InstanceOf<OperationCanceledException>(), () => tx.CommitAsync(cancel.Token));

        Assert.That(await s.CountsAsync(), Is.All.Zero);
        Assert.That(await s.PreparedAsync(), Is.Empty);
        Assert.That(await s.DecisionsAsync(), Is.Empty);
    }
}

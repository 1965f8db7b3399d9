using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Row = ShardKit.Tests.Distributed.DistributedShards.Row;

namespace ShardKit.Tests.Distributed;

public sealed class RecoveryTests
{
    private static Func<ShardedConnection, Task> InsertOnEveryShard(DistributedShards s, int id) => db =>
        db.ExecuteAsync($"insert into {s.Table} values (@CustomerId, @Id)",
            Enumerable.Range(0, s.Names.Length).Select(i => new Row { CustomerId = s.KeyOn(i), Id = id }).ToArray());

    private static DistributedShards Restarted(DistributedShards s, TimeSpan abortAfter) =>
        DistributedShards.Create(s.Direct, s.Names, s.Table, [], ownsResources: false, o => o.AbortPreparedAfter = abortAfter);

    [Test]
    public async Task A_transaction_abandoned_after_its_decision_is_committed_everywhere_and_its_decision_cleaned()
    {
        await using var s = await DistributedShards.SharedAsync(3, proxied: true);
        var gid = await Abandon.CommitAndCrashAtAsync(s, DistributedStep.AfterDecision, null, InsertOnEveryShard(s, 1));
        Assert.That(await s.PreparedAsync(), Has.Count.EqualTo(2), "the two shards other than the coordinator hold it prepared");
        Assert.That(await s.CountsAsync(), Is.EqualTo(new long[] { 1, 0, 0 }), "the coordinator committed its part with the decision; prepared rows are invisible");

        await using var app = Restarted(s, TimeSpan.FromHours(1));
        var report = await app.Source.RecoverAsync();

        Assert.That(report.Committed, Is.EqualTo(1));
        Assert.That(report.RolledBack, Is.Zero);
        Assert.That(report.IsComplete, Is.True);
        Assert.That(await s.CountsAsync(), Is.All.EqualTo(1));
        Assert.That(await s.PreparedAsync(), Is.Empty);
        Assert.That(await s.DecisionsAsync(), Is.EqualTo(new[] { (gid!, "commit") }), "cleaned by the next run, after the prepared are gone");

        var second = await app.Source.RecoverAsync();
        Assert.That((second.Committed, second.RolledBack, second.DecisionsCleaned), Is.EqualTo((0, 0, 1)));
        Assert.That(await s.DecisionsAsync(), Is.Empty);
    }

    [Test]
    public async Task A_shard_lost_after_the_decision_is_reported_pending_not_thrown_and_recovery_applies_it()
    {
        await using var s = await DistributedShards.SharedAsync(3, proxied: true);
        s.Source.OnDistributedStep = (step, _) =>
        {
            if (step == DistributedStep.AfterDecision)
            {
                s.Proxies[2].Cut();
            }

            return Task.CompletedTask;
        };
        await using var db = s.Source.CreateConnection();
        await using var tx = await db.BeginDistributedTransactionAsync();
        await InsertOnEveryShard(s, 1)(db);

        var result = await tx.CommitAsync();

        Assert.That(result.IsComplete, Is.False);
        Assert.That(result.PendingShards, Is.EqualTo(new[] { s.Names[2] }));
        Assert.That(await s.CountsAsync(), Is.EqualTo(new long[] { 1, 1, 0 }), "committed where reachable; the rest waits, prepared");

        s.Proxies[2].Restore();
        await using var app = Restarted(s, TimeSpan.FromHours(1));
        var report = await app.Source.RecoverAsync();
        Assert.That(report.Committed, Is.EqualTo(1));
        Assert.That(await s.CountsAsync(), Is.All.EqualTo(1));
    }

    [Test]
    public async Task An_undecided_transaction_is_left_alone_while_young_and_rolled_back_once_old()
    {
        await using var s = await DistributedShards.SharedAsync(2, proxied: true);
        await Abandon.CommitAndCrashAtAsync(s, DistributedStep.BeforeDecision, null, InsertOnEveryShard(s, 1));

        await using (var patient = Restarted(s, TimeSpan.FromHours(1)))
        {
            var report = await patient.Source.RecoverAsync();
            Assert.That((report.Committed, report.RolledBack), Is.EqualTo((0, 0)));
            Assert.That(report.Skipped, Is.GreaterThanOrEqualTo(1));
            Assert.That(await s.PreparedAsync(), Has.Count.EqualTo(1), "prepared on the shard other than the coordinator");
        }

        await using var app = Restarted(s, TimeSpan.Zero);
        var final = await app.Source.RecoverAsync();

        Assert.That((final.Committed, final.RolledBack), Is.EqualTo((0, 1)));
        Assert.That(await s.PreparedAsync(), Is.Empty);
        Assert.That(await s.CountsAsync(), Is.All.Zero);
        Assert.That((await s.DecisionsAsync()).Single().Outcome, Is.EqualTo("abort"), "the abort decision is kept: it fences off a late committer");
    }

    [Test]
    public async Task A_committer_that_loses_the_race_to_recovery_is_told_it_rolled_back()
    {
        await using var s = await DistributedShards.SharedAsync(2, o => o.AbortPreparedAfter = TimeSpan.Zero);
        var (paused, resume) = s.PauseAt(DistributedStep.BeforeDecision);
        await using var db = s.Source.CreateConnection();
        var tx = await db.BeginDistributedTransactionAsync();
        await InsertOnEveryShard(s, 1)(db);
        var commit = tx.CommitAsync();
        await paused.Task;

        var report = await s.Source.RecoverAsync();
        resume.SetResult();
        var error = Assert.ThrowsAsync<ShardAggregateException>(() => commit);

        Assert.That(report.RolledBack, Is.EqualTo(1));
        Assert.That(error!.Message, Does.Contain("rolled back").And.Contain("AbortPreparedAfter"));
        Assert.That(error.FailedShards, Is.EqualTo(new[] { s.Names[0] }), "names the coordinator");
        Assert.That(await s.CountsAsync(), Is.All.Zero);
        Assert.That(await s.PreparedAsync(), Is.Empty);
    }

    [Test]
    public async Task Recovery_waits_for_an_in_flight_commit_and_the_commit_then_succeeds()
    {
        await using var s = await DistributedShards.SharedAsync(2);
        var (paused, resume) = s.PauseAt(DistributedStep.BeforeDecision);
        await using var db = s.Source.CreateConnection();
        var tx = await db.BeginDistributedTransactionAsync();
        await InsertOnEveryShard(s, 1)(db);
        var commit = tx.CommitAsync();
        await paused.Task;

        var report = await s.Source.RecoverAsync();
        resume.SetResult();
        var result = await commit;

        Assert.That((report.Committed, report.RolledBack), Is.EqualTo((0, 0)));
        Assert.That(result.IsComplete, Is.True);
        Assert.That(await s.CountsAsync(), Is.All.EqualTo(1));
    }

    [Test]
    public async Task Concurrent_recovery_runs_finish_each_transaction_once_and_a_later_run_finds_nothing()
    {
        await using var s = await DistributedShards.SharedAsync(3, proxied: true);
        var steps = new[] { DistributedStep.AfterDecision, DistributedStep.BeforeDecision, DistributedStep.CommitPreparedShard };
        for (var id = 0; id < 6; id++)
        {
            await Abandon.CommitAndCrashAtAsync(s, steps[id % steps.Length], s.Names[id % 3], InsertOnEveryShard(s, id));
        }

        await using var app = Restarted(s, TimeSpan.Zero);
        var reports = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => app.Source.RecoverAsync()));

        Assert.That(reports.Select(r => r.IsComplete), Is.All.True);
        Assert.That(await s.PreparedAsync(), Is.Empty);
        for (var id = 0; id < 6; id++)
        {
            var expected = steps[id % steps.Length] == DistributedStep.BeforeDecision ? 0 : 1;
            Assert.That(await s.CountsAsync($"id = {id}"), Is.All.EqualTo(expected), $"transaction {id}");
        }

        await app.Source.RecoverAsync(); // cleans the commit decisions
        var later = await app.Source.RecoverAsync();
        Assert.That((later.Committed, later.RolledBack, later.DecisionsCleaned), Is.EqualTo((0, 0, 0)));
        Assert.That((await s.DecisionsAsync()).Select(d => d.Outcome), Is.All.EqualTo("abort"));
    }

    [Test]
    public async Task The_hosted_recovery_service_runs_recovery_when_the_host_starts()
    {
        await using var s = await DistributedShards.SharedAsync(2, proxied: true);
        await Abandon.CommitAndCrashAtAsync(s, DistributedStep.AfterDecision, null, InsertOnEveryShard(s, 1));
        await using var app = Restarted(s, TimeSpan.FromHours(1));
        var services = new ServiceCollection().AddSingleton(app.Source).AddShardKitRecovery(TimeSpan.FromHours(1), runAtStart: true);
        await using var provider = services.BuildServiceProvider();
        var service = (DistributedRecoveryService)provider.GetServices<IHostedService>().Single();

        await service.StartAsync(CancellationToken.None);
        for (var wait = 0; service.Runs == 0 && wait < 1500; wait++)
        {
            await Task.Delay(20);
        }

        Assert.That(service.Runs, Is.GreaterThanOrEqualTo(1), "the first run starts with the host");

        await service.StopAsync(CancellationToken.None);
        Assert.That(await s.CountsAsync(), Is.All.EqualTo(1));
        Assert.That(await s.PreparedAsync(), Is.Empty);
    }
}

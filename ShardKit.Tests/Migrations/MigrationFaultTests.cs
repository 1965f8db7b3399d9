using ShardKit.Tests.Distributed;
using ShardKit.Tests.Harness;

namespace ShardKit.Tests.Migrations;

/// <summary>Migrations on servers of this fixture's own, which it stops and restarts (the shared servers must never stop).</summary>
public sealed class MigrationFaultTests
{
    private LocalPostgresCluster? _cluster;

    [OneTimeSetUp]
    public async Task StartCluster() => _cluster = await DedicatedCluster.StartAsync(3);

    [OneTimeTearDown]
    public async Task StopCluster()
    {
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }
    }

    [Test]
    public async Task A_shard_stopped_mid_migration_fails_alone_is_reported_behind_and_a_rerun_converges_every_shard()
    {
        await using var shards = MigrationShards.Over(_cluster!.ConnectionStrings);
        var migrations = new[]
        {
            shards.Script(1, "create_t", "create table {0}.t (x int)"),
            shards.Script(2, "fill_t", "insert into {0}.t select generate_series(1, 1000)"),
            shards.Script(3, "index_t", "create index t_x on {0}.t (x)"),
        };
        var stopped = false;
        // The report comes before the script runs: the server goes down under the run's open connection.
        var progress = new InlineProgress(p =>
        {
            if (p is { Shard: "s2", Version: 2, Stage: MigrationStage.Started } && !stopped)
            {
                stopped = true;
                _cluster.StopAsync(2).GetAwaiter().GetResult();
            }
        });

        var error = Assert.ThrowsAsync<MigrationException>(() => shards.Source.MigrateAsync(migrations, shards.Options, progress))!;

        Assert.That(stopped, Is.True);
        Assert.That(error.Shard, Is.EqualTo("s2"));
        Assert.That(error.Version, Is.EqualTo(2));
        Assert.That(error.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s2" }));
        Assert.That(error.CompletedShards, Is.EquivalentTo(new[] { "s0", "s1" }));
        var whileDown = await shards.Source.GetMigrationStatusAsync(migrations, shards.Options);
        Assert.That(whileDown.UnreadableShards, Is.EqualTo(new[] { "s2" }));

        await _cluster.RestartAsync(2);
        var behind = await shards.Source.GetMigrationStatusAsync(migrations, shards.Options);
        Assert.That(behind.ShardsBehind, Is.EqualTo(new[] { "s2" }));
        // The test servers run with synchronous_commit=off: an immediate stop may lose s2's version 1 as well.
        Assert.That(behind.Shards[2].AppliedVersion, Is.Null.Or.EqualTo(1));
        Assert.That(behind.HasDrift, Is.True);

        var rerun = await shards.Source.MigrateAsync(migrations, shards.Options);

        Assert.That(rerun.AppliedVersions["s2"], Is.SupersetOf(new long[] { 2, 3 }));
        Assert.That(rerun.AppliedVersions["s0"], Is.Empty);
        Assert.That(await shards.HistoryAsync(), Has.All.EqualTo(new long[] { 1, 2, 3 }));
        Assert.That(await shards.ScalarAsync<long>(2, "select count(*) from {0}.t"), Is.EqualTo(1000), "script 2 ran once on s2");
        var after = await shards.Source.GetMigrationStatusAsync(migrations, shards.Options);
        Assert.That(after.IsUpToDate, Is.True);
        Assert.That(after.Shards.Select(s => s.AppliedVersion), Has.All.EqualTo(3));
    }
}

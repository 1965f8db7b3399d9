using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace ShardKit.Tests.Migrations;

public sealed class MigrationStatusTests
{
    [Test]
    public async Task Status_before_any_run_lists_every_script_pending_on_every_shard_without_drift()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[] { shards.Script(1, "t", "create table {0}.t (x int)"), shards.Script(2, "u", "create table {0}.u (x int)") };

        var status = await shards.Source.GetMigrationStatusAsync(migrations, shards.Options);

        Assert.That(status.Shards.Select(s => s.Shard), Is.EqualTo(shards.Names));
        Assert.That(status.Shards, Has.All.Matches<ShardMigrationStatus>(s => s.AppliedVersion == null && s.Pending.Count == 2 && s.Error == null));
        Assert.That(status.HasDrift, Is.False);
        Assert.That(status.IsUpToDate, Is.False);
        Assert.That(status.LatestVersion, Is.Null);
        Assert.That(await shards.TableExistsAsync(0, "shardkit_migrations"), Is.False, "reading status creates nothing");
    }

    [Test]
    public async Task A_script_edited_after_it_ran_is_reported_as_checksum_drift_and_blocks_the_next_run()
    {
        await using var shards = await MigrationShards.SharedAsync();
        await shards.Source.MigrateAsync([shards.Script(1, "t", "create table {0}.t (x int)")], shards.Options);
        var edited = new[] { shards.Script(1, "t", "create table {0}.t (x bigint)"), shards.Script(2, "u", "create table {0}.u (x int)") };

        var status = await shards.Source.GetMigrationStatusAsync(edited, shards.Options);
        Assert.That(status.HasDrift, Is.True);
        Assert.That(status.Shards, Has.All.Matches<ShardMigrationStatus>(s => s.ChecksumMismatches.Single().Version == 1 && s.AppliedVersion == 1));
        var health = await new ShardMigrationHealthCheck(shards.Source.CreateMigrator(edited, shards.Options)).CheckHealthAsync(new HealthCheckContext());
        Assert.That(health.Status, Is.EqualTo(HealthStatus.Degraded));
        Assert.That(health.Description, Does.Contain("changed after they ran"));

        var error = Assert.ThrowsAsync<MigrationException>(() => shards.Source.MigrateAsync(edited, shards.Options))!;
        Assert.That(error.Message, Does.Contain("0001_t on s0").And.Contain("Nothing was applied").And.Contain("AllowChecksumDrift"));
        Assert.That(error.Version, Is.EqualTo(1));
        Assert.That(await shards.TableExistsAsync(0, "u"), Is.False);

        var allowed = await shards.Source.MigrateAsync(edited, shards.OptionsWith(allowDrift: true));
        Assert.That(allowed.AppliedVersions.Values, Has.All.EqualTo(new long[] { 2 }));
    }

    [Test]
    public async Task A_shard_behind_the_others_is_reported_and_the_health_check_is_degraded_until_a_run_converges()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[] { shards.Script(1, "t", "create table {0}.t (x int)"), shards.Script(2, "u", "create table {0}.u (x int)") };
        await shards.Source.MigrateAsync(migrations[..1], shards.Options);
        await using (var firstShardOnly = shards.NewSource(take: 1))
        {
            await firstShardOnly.MigrateAsync(migrations, shards.Options);
        }

        var migrator = shards.Source.CreateMigrator(migrations, shards.Options);
        var status = await migrator.GetStatusAsync();
        Assert.That(status.ShardsBehind, Is.EqualTo(shards.Names[1..]));
        Assert.That(status.LatestVersion, Is.EqualTo(2));
        Assert.That(status.Shards[0].IsBehind, Is.False);
        Assert.That(status.Shards[1].Pending.Select(m => m.Version), Is.EqualTo(new long[] { 2 }));
        var check = new ShardMigrationHealthCheck(migrator);
        var degraded = await check.CheckHealthAsync(new HealthCheckContext());
        Assert.That(degraded.Status, Is.EqualTo(HealthStatus.Degraded));
        Assert.That(degraded.Description, Does.Contain("behind: s1"));

        await migrator.MigrateAsync();

        var healthy = await check.CheckHealthAsync(new HealthCheckContext());
        Assert.That(healthy.Status, Is.EqualTo(HealthStatus.Healthy), healthy.Description);
        Assert.That((await migrator.GetStatusAsync()).IsUpToDate, Is.True);
    }

    [Test]
    public async Task Versions_applied_by_a_newer_release_are_reported_as_unknown_not_as_drift()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[] { shards.Script(1, "t", "create table {0}.t (x int)"), shards.Script(2, "u", "create table {0}.u (x int)") };
        await shards.Source.MigrateAsync(migrations, shards.Options);

        var status = await shards.Source.GetMigrationStatusAsync(migrations[..1], shards.Options);

        Assert.That(status.Shards, Has.All.Matches<ShardMigrationStatus>(s => s.Unknown.Single().Version == 2 && s.Pending.Count == 0));
        Assert.That(status.HasDrift, Is.False);
    }

    [Test]
    public async Task The_registered_health_check_resolves_from_the_container_and_reports_healthy_when_shards_agree()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[] { shards.Script(1, "t", "create table {0}.t (x int)") };
        await shards.Source.MigrateAsync(migrations, shards.Options);
        var services = new ServiceCollection().AddSingleton(shards.Source).AddShardKitMigrationsCheck(migrations, shards.Options);
        await using var provider = services.BuildServiceProvider();

        var result = await provider.GetRequiredService<ShardMigrationHealthCheck>().CheckHealthAsync(new HealthCheckContext());

        Assert.That(result.Status, Is.EqualTo(HealthStatus.Healthy), result.Description);
        Assert.That(result.Description, Does.Contain("at version 1"));
        Assert.That(result.Data.Keys, Is.EquivalentTo(shards.Names));
    }
}

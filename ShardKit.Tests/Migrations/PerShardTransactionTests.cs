namespace ShardKit.Tests.Migrations;

/// <summary>
/// A transactional script commits per shard, not across shards (README, "Schema migrations": why not two-phase commit):
/// a shard where it fails keeps nothing of it, the others keep it, status reports the gap and a re-run closes it.
/// </summary>
public sealed class PerShardTransactionTests
{
    [Test]
    public async Task A_transactional_script_failing_on_one_shard_after_the_canary_is_rolled_back_there_only_and_a_rerun_converges()
    {
        await using var shards = await MigrationShards.SharedAsync();
        const int Failing = 2;
        // Only s2 already has the table the script creates last, so only there the script fails, after its first statements ran.
        await shards.OnShardAsync(Failing, "create schema {0}; create table {0}.clash (x int)");
        var migrations = new[]
        {
            shards.Script(1, "orders", "create table {0}.orders (id int); insert into {0}.orders values (1); create table {0}.clash (x int)"),
        };

        var error = Assert.ThrowsAsync<MigrationException>(() => shards.Source.MigrateAsync(migrations, shards.Options))!;

        Assert.That(error.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s2" }));
        Assert.That(error.SqlState, Is.EqualTo("42P07"));
        Assert.That(error.CompletedShards, Is.EquivalentTo(shards.Names.Where(n => n != "s2")));
        Assert.That(await shards.TableExistsAsync(Failing, "orders"), Is.False, "s2 kept none of the script: its statements rolled back");
        var history = await shards.HistoryAsync();
        Assert.That(history[Failing], Is.Empty, "and no history row");
        for (var i = 0; i < shards.Direct.Count; i++)
        {
            if (i != Failing)
            {
                Assert.That(history[i], Is.EqualTo(new long[] { 1 }), $"s{i} committed the script on its own");
                Assert.That(await shards.ScalarAsync<long>(i, "select count(*) from {0}.orders"), Is.EqualTo(1));
            }
        }

        var status = await shards.Source.GetMigrationStatusAsync(migrations, shards.Options);
        Assert.That(status.ShardsBehind, Is.EqualTo(new[] { "s2" }));

        await shards.OnShardAsync(Failing, "drop table {0}.clash");
        var rerun = await shards.Source.MigrateAsync(migrations, shards.Options);

        Assert.That(rerun.AppliedVersions["s2"], Is.EqualTo(new long[] { 1 }));
        Assert.That(rerun.AppliedCount, Is.EqualTo(1), "the other shards ran nothing again");
        Assert.That(await shards.HistoryAsync(), Has.All.EqualTo(new long[] { 1 }));
        Assert.That(await shards.ScalarAsync<long>(Failing, "select count(*) from {0}.orders"), Is.EqualTo(1));
    }
}

namespace ShardKit.Tests.Migrations;

public sealed class MigrationLockTests
{
    [Test]
    public async Task A_second_process_times_out_on_the_lock_with_a_typed_error_and_applies_nothing()
    {
        await using var shards = await MigrationShards.SharedAsync();
        await using var other = shards.NewSource();
        var migrations = new[]
        {
            shards.Script(1, "log", "create table {0}.runs (at timestamptz default now()); insert into {0}.runs default values; select pg_sleep(2)"),
        };
        var canaryStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = shards.Source.MigrateAsync(migrations, shards.Options, new InlineProgress(_ => canaryStarted.TrySetResult()));
        await canaryStarted.Task; // the first run holds every shard's lock by now

        var error = Assert.ThrowsAsync<MigrationLockTimeoutException>(
            () => other.MigrateAsync(migrations, shards.OptionsWith(lockTimeout: TimeSpan.FromMilliseconds(300))))!;
        var result = await first;

        Assert.That(error.Shard, Is.EqualTo("s0"), "the second run waits at the first shard");
        Assert.That(error.HolderProcessId, Is.Not.Null);
        Assert.That(error.LockTimeout, Is.EqualTo(TimeSpan.FromMilliseconds(300)));
        Assert.That(error.Message, Does.Contain("another process").And.Contain("Nothing was applied"));
        Assert.That(result.AppliedCount, Is.EqualTo(shards.Direct.Count));
        for (var i = 0; i < shards.Direct.Count; i++)
        {
            Assert.That(await shards.ScalarAsync<long>(i, "select count(*) from {0}.runs"), Is.EqualTo(1), $"the script ran once on s{i}");
        }
    }

    [Test]
    public async Task Two_processes_migrating_at_once_apply_each_script_once_on_every_shard()
    {
        await using var shards = await MigrationShards.SharedAsync();
        await using var other = shards.NewSource();
        var migrations = new[]
        {
            shards.Script(1, "log", "create table {0}.runs (at timestamptz default now())"),
            shards.Script(2, "first_run", "insert into {0}.runs default values; select pg_sleep(0.2)"),
        };

        var results = await Task.WhenAll(shards.Source.MigrateAsync(migrations, shards.Options), other.MigrateAsync(migrations, shards.Options));

        Assert.That(results.Sum(r => r.AppliedCount), Is.EqualTo(2 * shards.Direct.Count), "every script ran once per shard, by one of the two");
        for (var i = 0; i < shards.Direct.Count; i++)
        {
            Assert.That(await shards.ScalarAsync<long>(i, "select count(*) from {0}.runs"), Is.EqualTo(1), $"s{i}");
        }

        Assert.That(await shards.HistoryAsync(), Has.All.EqualTo(new long[] { 1, 2 }));
    }

    [Test]
    public async Task The_lock_is_released_after_a_run_so_the_next_one_starts_at_once()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[] { shards.Script(1, "t", "create table {0}.t (x int)") };
        Assert.ThrowsAsync<MigrationException>(() => shards.Source.MigrateAsync(
            [.. migrations, shards.Script(2, "bad", "select * from {0}.missing")], shards.Options));

        await using var other = shards.NewSource();
        var status = await other.CreateMigrator(migrations, shards.OptionsWith(lockTimeout: TimeSpan.Zero)).MigrateAsync();

        Assert.That(status.AppliedVersions["s0"], Is.Empty, "s0 kept version 1 from the failed run");
        Assert.That(status.AppliedVersions["s1"], Is.EqualTo(new long[] { 1 }));
    }

    [Test]
    public async Task A_cancelled_run_rolls_back_the_script_in_flight_and_releases_every_lock()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[] { shards.Script(1, "slow", "create table {0}.slow (x int); select pg_sleep(30)") };
        using var cancel = new CancellationTokenSource();
        var progress = new InlineProgress(p =>
        {
            if (p.Stage == MigrationStage.Started)
            {
                cancel.CancelAfter(TimeSpan.FromMilliseconds(300));
            }
        });

        Assert.That(() => shards.Source.MigrateAsync(migrations, shards.Options, progress, cancel.Token), Throws.InstanceOf<OperationCanceledException>());

        Assert.That(await shards.TableExistsAsync(0, "slow"), Is.False, "the canary's script rolled back");
        Assert.That((await shards.HistoryAsync()).SelectMany(h => h), Is.Empty);
        await using var other = shards.NewSource();
        var quick = new[] { shards.Script(1, "slow", "create table {0}.slow (x int)") };
        var result = await other.MigrateAsync(quick, shards.OptionsWith(lockTimeout: TimeSpan.Zero));
        Assert.That(result.AppliedCount, Is.EqualTo(shards.Direct.Count), "no lock was left behind");
    }
}

namespace ShardKit.Tests.Migrations;

public sealed class MigrateTests
{
    [Test]
    public async Task Migrate_applies_every_script_to_every_shard_canary_first_and_records_history()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[]
        {
            shards.Script(1, "create_orders", "create table {0}.orders (customer_id bigint not null, id bigint not null)"),
            shards.Script(2, "add_total", "alter table {0}.orders add column total numeric not null default 0"),
        };
        var reports = new List<MigrationProgress>();
        var progress = new InlineProgress(r => { lock (reports) { reports.Add(r); } });

        var result = await shards.Source.MigrateAsync(migrations, shards.OptionsWith(canary: "s1"), progress);

        Assert.That(result.CanaryShard, Is.EqualTo("s1"));
        Assert.That(result.AppliedCount, Is.EqualTo(2 * shards.Direct.Count));
        Assert.That(result.AppliedVersions.Values, Has.All.EqualTo(new long[] { 1, 2 }));
        Assert.That(await shards.HistoryAsync(), Has.All.EqualTo(new long[] { 1, 2 }));
        for (var i = 0; i < shards.Direct.Count; i++)
        {
            Assert.That(await shards.ScalarAsync<long>(i, "select count(*) from information_schema.columns where table_schema = '{0}' and table_name = 'orders'"),
                Is.EqualTo(3), $"shard s{i} has the table with its added column");
            var row = (await shards.QueryAsync<(string Name, string Checksum, bool Transactional, long DurationMs)>(i,
                "select name, checksum, transactional, duration_ms from {0}.shardkit_migrations where version = 1")).Single();
            Assert.That(row.Name, Is.EqualTo("create_orders"));
            Assert.That(row.Checksum, Is.EqualTo(migrations[0].Checksum));
            Assert.That(row.Transactional, Is.True);
            Assert.That(row.DurationMs, Is.GreaterThanOrEqualTo(0));
        }

        // The canary finished both scripts before any other shard started one.
        Assert.That(reports.Take(4).Select(r => (r.Shard, r.Version, r.Stage, r.IsCanary)), Is.EqualTo(new[]
        {
            ("s1", 1L, MigrationStage.Started, true), ("s1", 1L, MigrationStage.Applied, true),
            ("s1", 2L, MigrationStage.Started, true), ("s1", 2L, MigrationStage.Applied, true),
        }));
        Assert.That(reports.Count(r => r.Stage == MigrationStage.Applied), Is.EqualTo(2 * shards.Direct.Count));
    }

    [Test]
    public async Task A_second_run_applies_nothing_and_leaves_the_history_unchanged()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[] { shards.Script(1, "create_t", "create table {0}.t (x int); insert into {0}.t values (1)") };
        await shards.Source.MigrateAsync(migrations, shards.Options);
        var before = await shards.QueryAsync<DateTime>(0, "select applied_at from {0}.shardkit_migrations");

        var again = await shards.Source.MigrateAsync(migrations, shards.Options);

        Assert.That(again.AppliedCount, Is.Zero);
        Assert.That(await shards.QueryAsync<DateTime>(0, "select applied_at from {0}.shardkit_migrations"), Is.EqualTo(before));
        Assert.That(await shards.ScalarAsync<long>(2, "select count(*) from {0}.t"), Is.EqualTo(1), "the script's insert ran once");
        Assert.That((await shards.Source.GetMigrationStatusAsync(migrations, shards.Options)).IsUpToDate, Is.True);
    }

    [Test]
    public async Task A_failing_script_on_the_canary_stops_before_other_shards_and_names_shard_version_and_sqlstate()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[]
        {
            shards.Script(1, "create_a", "create table {0}.a (x int)"),
            shards.Script(2, "alter_missing", "alter table {0}.missing add column y int"),
            shards.Script(3, "create_b", "create table {0}.b (x int)"),
        };

        var error = Assert.ThrowsAsync<MigrationException>(() => shards.Source.MigrateAsync(migrations, shards.OptionsWith(canary: "s2")))!;

        Assert.That(error.Shard, Is.EqualTo("s2"));
        Assert.That(error.Version, Is.EqualTo(2));
        Assert.That(error.Script, Is.EqualTo("0002_alter_missing"));
        Assert.That(error.SqlState, Is.EqualTo("42P01"));
        Assert.That(error.Message, Does.Contain("canary").And.Contain("No other shard was touched").And.Contain("run the migration again"));
        Assert.That(error.InnerException, Is.InstanceOf<Npgsql.PostgresException>());
        var history = await shards.HistoryAsync();
        Assert.That(history[2], Is.EqualTo(new long[] { 1 }), "the canary kept the script that succeeded");
        Assert.That(await shards.TableExistsAsync(2, "b"), Is.False);
        foreach (var other in new[] { 0, 1, 3 }.Where(i => i < shards.Direct.Count))
        {
            Assert.That(history[other], Is.Empty, $"s{other} has no history");
            Assert.That(await shards.TableExistsAsync(other, "a"), Is.False, $"s{other} was not touched");
        }
    }

    [Test]
    public async Task Without_the_canary_first_every_shard_starts_at_once_and_each_failed_shard_is_listed()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[]
        {
            shards.Script(1, "create_a", "create table {0}.a (x int)"),
            shards.Script(2, "alter_missing", "alter table {0}.missing add column y int"),
        };
        var options = new MigrationOptions { HistorySchema = shards.Schema, CanaryFirst = false, MaxParallelism = shards.Direct.Count };

        var error = Assert.ThrowsAsync<MigrationException>(() => shards.Source.MigrateAsync(migrations, options))!;

        Assert.That(error.Failures.Select(f => f.Shard), Is.EqualTo(shards.Names), "no canary stopped the others: every shard ran and failed");
        Assert.That(error.Message, Does.Not.Contain("canary"));
        Assert.That(await shards.HistoryAsync(), Has.All.EqualTo(new long[] { 1 }));

        var fixedScripts = new[] { migrations[0], shards.Script(2, "alter_a", "alter table {0}.a add column y int") };
        var result = await shards.Source.MigrateAsync(fixedScripts, options);
        Assert.That(result.CanaryShard, Is.Null);
        Assert.That(result.AppliedVersions.Values, Has.All.EqualTo(new long[] { 2 }));
    }

    [Test]
    public async Task A_transactional_script_failing_halfway_leaves_nothing_of_it_on_the_shard()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[]
        {
            shards.Script(1, "half", "create table {0}.half (x int); insert into {0}.half values (1); select 1 / 0; create table {0}.never (x int)"),
        };

        var error = Assert.ThrowsAsync<MigrationException>(() => shards.Source.MigrateAsync(migrations, shards.Options))!;

        Assert.That(error.SqlState, Is.EqualTo("22012"));
        Assert.That(error.Message, Does.Contain("rolled back on this shard"));
        Assert.That(await shards.TableExistsAsync(0, "half"), Is.False, "the statements before the failure were rolled back");
        Assert.That(await shards.ScalarAsync<bool>(0, "select to_regclass('{0}.shardkit_migrations') is not null"), Is.True);
        Assert.That((await shards.HistoryAsync()).SelectMany(h => h), Is.Empty, "no history row for the failed script");
    }

    [Test]
    public async Task A_concurrent_index_build_that_failed_leaves_an_invalid_index_which_a_rerun_drops_and_rebuilds()
    {
        await using var shards = await MigrationShards.SharedAsync();
        Migration[] migrations =
        [
            shards.Script(1, "create_emails", "create table {0}.emails (id int, email text); insert into {0}.emails values (1, 'a'), (2, 'a')"),
            new Migration(2, "emails_unique",
                $"{Migration.NoTransactionMarker}\ncreate unique index concurrently if not exists emails_email on {shards.Schema}.emails (email);\n" +
                $"comment on table {shards.Schema}.emails is 'unique emails';"),
        ];
        Assert.That(migrations[1].IsTransactional, Is.False);

        var error = Assert.ThrowsAsync<MigrationException>(() => shards.Source.MigrateAsync(migrations, shards.Options))!;
        Assert.That(error.SqlState, Is.EqualTo("23505"));
        Assert.That(error.Version, Is.EqualTo(2));
        Assert.That(error.Message, Does.Contain("non-transactional"));
        Assert.That(await shards.InvalidIndexesAsync(0), Is.EqualTo(1), "the failed concurrent build left an invalid index on the canary");

        // Fix the data on the canary; the other shards were never touched and run both scripts, with fixed data, from scratch.
        await shards.OnShardAsync(0, "delete from {0}.emails where id = 2");
        migrations[0] = shards.Script(1, "create_emails", "create table {0}.emails (id int, email text); insert into {0}.emails values (1, 'a'), (2, 'b')");
        var fixedData = shards.OptionsWith(allowDrift: true); // script 1 was corrected after it ran on the canary
        var result = await shards.Source.MigrateAsync(migrations, fixedData);

        Assert.That(result.AppliedVersions["s0"], Is.EqualTo(new long[] { 2 }));
        Assert.That(result.AppliedVersions["s1"], Is.EqualTo(new long[] { 1, 2 }));
        Assert.That(await shards.HistoryAsync(), Has.All.EqualTo(new long[] { 1, 2 }));
        for (var i = 0; i < shards.Direct.Count; i++)
        {
            Assert.That(await shards.InvalidIndexesAsync(i), Is.Zero, $"s{i} has no invalid index");
            Assert.That(await shards.ScalarAsync<bool>(i,
                "select i.indisvalid and i.indisunique from pg_index i where i.indexrelid = '{0}.emails_email'::regclass"), Is.True);
            Assert.That(await shards.ScalarAsync<bool>(i, "select transactional from {0}.shardkit_migrations where version = 2"), Is.False);
        }
    }

    [Test]
    public async Task Create_index_concurrently_in_a_transactional_script_fails_and_names_the_marker()
    {
        await using var shards = await MigrationShards.SharedAsync();
        var migrations = new[]
        {
            shards.Script(1, "create_t", "create table {0}.t (x int)"),
            shards.Script(2, "index_t", "create index concurrently t_x on {0}.t (x)"),
        };

        var error = Assert.ThrowsAsync<MigrationException>(() => shards.Source.MigrateAsync(migrations, shards.Options))!;

        Assert.That(error.SqlState, Is.EqualTo("25001"));
        Assert.That(error.Message, Does.Contain(Migration.NoTransactionMarker));
    }

    [Test]
    public async Task Applied_and_failed_scripts_and_dropped_invalid_indexes_are_logged_with_shard_and_script()
    {
        await using var shards = await MigrationShards.SharedAsync();
        using var logs = new LogCapture();
        await using var source = shards.NewSource(take: 1, logs: logs);
        Migration[] migrations =
        [
            shards.Script(1, "create_t", "create table {0}.t (x int); insert into {0}.t values (1), (1)"),
            new Migration(2, "t_unique", $"{Migration.NoTransactionMarker}\ncreate unique index concurrently if not exists t_x on {shards.Schema}.t (x)"),
        ];
        Assert.ThrowsAsync<MigrationException>(() => source.MigrateAsync(migrations, shards.Options));
        await shards.OnShardAsync(0, "delete from {0}.t where ctid <> (select min(ctid) from {0}.t)");

        await source.MigrateAsync(migrations, shards.Options);

        Assert.That(logs.Logs.Where(l => l.EventId == 1701).Select(l => l.Message.Split(" in ")[0]),
            Is.EqualTo(new[] { "Migration 0001_create_t applied on shard s0", "Migration 0002_t_unique applied on shard s0" }));
        var failed = logs.Logs.Single(l => l.EventId == 1702);
        Assert.That(failed.Level, Is.EqualTo(Microsoft.Extensions.Logging.LogLevel.Error));
        Assert.That(failed.Message, Is.EqualTo("Migration 0002_t_unique failed on shard s0 (SQLSTATE 23505)"));
        Assert.That(logs.Logs.Single(l => l.EventId == 1703).Message, Does.Contain("t_x").And.Contain("0002_t_unique").And.Contain("s0"));
    }
}

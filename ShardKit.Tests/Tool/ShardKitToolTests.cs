using System.Globalization;
using ShardKit.Tests.Migrations;
using ShardKit.Tool;

namespace ShardKit.Tests.Tool;

/// <summary>The <c>shardkit</c> tool's entry point, run in-process against the real test shards.</summary>
public sealed class ShardKitToolTests
{
    private string _folder = null!;

    [SetUp]
    public void CreateFolder() => Directory.CreateDirectory(_folder = Path.Combine(Path.GetTempPath(), "shardkit-tool-" + Guid.NewGuid().ToString("N")));

    [TearDown]
    public void RemoveFolder() => Directory.Delete(_folder, recursive: true);

    [Test]
    public async Task Apply_migrates_every_shard_prints_each_step_and_a_table_and_status_then_exits_0()
    {
        await using var shards = await MigrationShards.SharedAsync();
        WriteScripts(shards);

        var before = await ToolRun.RunAsync(["migrations", "status", .. Args(shards)]);
        Assert.That(before.ExitCode, Is.EqualTo(ExitCodes.Pending), before.ToString());
        Assert.That(before.Output, Does.Contain("pending"));

        var apply = await ToolRun.RunAsync(["migrations", "apply", .. Args(shards)]);
        await TestContext.Out.WriteLineAsync(apply.Output);
        Assert.That(apply.ExitCode, Is.EqualTo(ExitCodes.Ok), apply.ToString());
        Assert.That(apply.Error, Is.Empty);
        foreach (var name in shards.Names)
        {
            Assert.That(apply.Output, Does.Match($@"\] {name} +0001_create_items +applied +\d+ ms"), "live progress names shard, script, stage, duration");
            Assert.That(apply.Output, Does.Match($@"(?m)^{name} +2 +0 +2 +\d+ ms +up to date$"), "the final table has a row per shard");
        }

        Assert.That(apply.Output, Does.Contain("(canary)").And.Contain("every shard is up to date"));
        Assert.That(await shards.HistoryAsync(), Has.All.EqualTo(new long[] { 1, 2 }));

        var after = await ToolRun.RunAsync(["migrations", "status", .. Args(shards)]);
        Assert.That(after.ExitCode, Is.EqualTo(ExitCodes.Ok), after.ToString());
        Assert.That(after.Output, Does.Contain("every shard is up to date"));

        var again = await ToolRun.RunAsync(["migrations", "apply", .. Args(shards)]);
        Assert.That(again.ExitCode, Is.EqualTo(ExitCodes.Ok), again.ToString());
        Assert.That(again.Output, Does.Contain("Done: 0 script runs applied"));
    }

    [Test]
    public async Task Shards_come_from_an_appsettings_file_with_the_ShardKit_section()
    {
        await using var shards = await MigrationShards.SharedAsync();
        WriteScripts(shards);
        var config = Path.Combine(_folder, "appsettings.json");
        var list = string.Join(", ", shards.Names.Select((n, i) => $$"""{ "Name": "{{n}}", "ConnectionString": {{System.Text.Json.JsonSerializer.Serialize(shards.Direct[i])}} }"""));
        await File.WriteAllTextAsync(config, $$"""{ "ShardKit": { "Shards": [ {{list}} ], "Strategy": "Modulo" } }""");

        var apply = await ToolRun.RunAsync("migrations", "apply", "--config", config, "--scripts", Scripts, "--history-schema", shards.Schema);
        Assert.That(apply.ExitCode, Is.EqualTo(ExitCodes.Ok), apply.ToString());
        Assert.That(await shards.HistoryAsync(), Has.All.EqualTo(new long[] { 1, 2 }));

        var map = await ToolRun.RunAsync("map", "show", "--config", config);
        Assert.That(map.ExitCode, Is.EqualTo(ExitCodes.Ok), map.ToString());
        Assert.That(map.Output, Does.Contain("Strategy: modulo"));
        Assert.That(map.Output, Does.Match($@"(?m)^{shards.Names.Length - 1} +{shards.Names[^1]} "), "one row per shard, in order");
    }

    [Test]
    public async Task A_shard_behind_and_a_script_edited_after_it_ran_are_drift_exit_3_and_apply_refuses_the_edit_with_exit_1()
    {
        await using var shards = await MigrationShards.SharedAsync();
        WriteScripts(shards);
        var firstShard = new[] { "--shard", $"{shards.Names[0]}={shards.Direct[0]}", "--scripts", Scripts, "--history-schema", shards.Schema };
        Assert.That((await ToolRun.RunAsync(["migrations", "apply", .. firstShard])).ExitCode, Is.EqualTo(ExitCodes.Ok));

        var behind = await ToolRun.RunAsync(["migrations", "status", .. Args(shards)]);
        Assert.That(behind.ExitCode, Is.EqualTo(ExitCodes.Drift), behind.ToString());
        Assert.That(behind.Output, Does.Match(@"(?m)^s1 +- +2 +behind other shards$").And.Contain("DRIFT"));

        Assert.That((await ToolRun.RunAsync(["migrations", "apply", .. Args(shards)])).ExitCode, Is.EqualTo(ExitCodes.Ok));
        await File.AppendAllTextAsync(Path.Combine(Scripts, "0001_create_items.sql"), "\n-- edited\n");

        var edited = await ToolRun.RunAsync(["migrations", "status", .. Args(shards)]);
        Assert.That(edited.ExitCode, Is.EqualTo(ExitCodes.Drift), edited.ToString());
        Assert.That(edited.Output, Does.Contain("changed after it ran: 0001_create_items"));

        var refused = await ToolRun.RunAsync(["migrations", "apply", .. Args(shards)]);
        Assert.That(refused.ExitCode, Is.EqualTo(ExitCodes.Failed), refused.ToString());
        Assert.That(refused.Error, Does.StartWith("Migration failed: Scripts changed after they ran").And.Contain("Nothing was applied"));
    }

    [Test]
    public async Task A_failing_script_exits_1_naming_shard_script_and_sqlstate_and_the_table_shows_where_it_stopped()
    {
        await using var shards = await MigrationShards.SharedAsync();
        WriteScripts(shards);
        await File.WriteAllTextAsync(Path.Combine(Scripts, "0003_broken.sql"), $"insert into {shards.Schema}.no_such_table values (1);");

        var run = await ToolRun.RunAsync(["migrations", "apply", .. Args(shards)]);

        Assert.That(run.ExitCode, Is.EqualTo(ExitCodes.Failed), run.ToString());
        Assert.That(run.Error, Does.StartWith("Migration failed:").And.Contain("0003_broken").And.Contain("s0").And.Contain("42P01"));
        Assert.That(run.Output, Does.Match(@"\] s0 +0003_broken +failed"));
        Assert.That(run.Output, Does.Match(@"(?m)^s0 +2 +1 +- +\d+ ms +failed at 0003_broken$"), "the canary stopped at the broken script");
        Assert.That(run.Output, Does.Match(@"(?m)^s1 +- +3 +- +- +behind other shards$"), "the canary failed, so no other shard was touched");
    }

    [Test]
    public async Task An_unreachable_shard_exits_1_with_its_name_and_never_the_password()
    {
        await using var shards = await MigrationShards.SharedAsync();
        WriteScripts(shards);
        const string Unreachable = "down=Host=127.0.0.1;Port=1;Username=app;Password=hunter2;Timeout=2";

        var status = await ToolRun.RunAsync("migrations", "status", "--shard", Unreachable, "--scripts", Scripts);
        Assert.That(status.ExitCode, Is.EqualTo(ExitCodes.Failed), status.ToString());
        Assert.That(status.Output, Does.Match(@"(?m)^down +- +0 +unreadable: ").And.Contain("UNREADABLE: down"));

        var apply = await ToolRun.RunAsync("migrations", "apply", "--shard", Unreachable, "--scripts", Scripts);
        Assert.That(apply.ExitCode, Is.EqualTo(ExitCodes.Failed), apply.ToString());
        Assert.That(apply.Error, Does.StartWith("Migration failed:").And.Contain("down"));
        Assert.That(status.ToString() + apply, Does.Not.Contain("hunter2"));
    }

    [Test]
    public async Task A_missing_scripts_folder_exits_2_naming_the_folder()
    {
        var missing = Path.Combine(_folder, "nope");
        var run = await ToolRun.RunAsync("migrations", "apply", "--shard", "s0=Host=localhost", "--scripts", missing);
        Assert.That(run.ExitCode, Is.EqualTo(ExitCodes.Usage), run.ToString());
        Assert.That(run.Error, Does.Contain($"The scripts folder '{missing}' does not exist"));
        Assert.That(run.Output, Is.Empty, "nothing was started");
    }

    [Test]
    public async Task An_empty_scripts_folder_and_a_badly_named_script_exit_2_with_the_rule()
    {
        var empty = await ToolRun.RunAsync("migrations", "apply", "--shard", "s0=Host=localhost", "--scripts", _folder);
        Assert.That(empty.ExitCode, Is.EqualTo(ExitCodes.Usage), empty.ToString());
        Assert.That(empty.Error, Does.Contain("has no .sql scripts"));

        await File.WriteAllTextAsync(Path.Combine(_folder, "create_orders.sql"), "select 1");
        var misnamed = await ToolRun.RunAsync("migrations", "status", "--shard", "s0=Host=localhost", "--scripts", _folder);
        Assert.That(misnamed.ExitCode, Is.EqualTo(ExitCodes.Usage), misnamed.ToString());
        Assert.That(misnamed.Error, Does.Contain("VERSION_NAME.sql"));
    }

    [Test]
    public async Task A_malformed_connection_string_exits_2_naming_the_shard_and_never_the_password()
    {
        WriteScripts(null);
        var run = await ToolRun.RunAsync("migrations", "apply", "--shard", "s0=Host=localhost;Password=hunter2;Bogus=1", "--scripts", Scripts);
        Assert.That(run.ExitCode, Is.EqualTo(ExitCodes.Usage), run.ToString());
        Assert.That(run.Error, Does.Contain("Shard 's0' has a malformed connection string"));
        Assert.That(run.ToString(), Does.Not.Contain("hunter2"));
    }

    [TestCase(new[] { "migrations", "apply", "--shard", "s0=Host=localhost" }, "--scripts")]
    [TestCase(new[] { "migrations", "apply", "--scripts", "." }, "No shards given")]
    [TestCase(new[] { "migrations", "apply", "--shard", "Host=localhost;Password=hunter2", "--scripts", "." }, "is not NAME=CONNECTION_STRING")]
    [TestCase(new[] { "migrations", "apply", "--shard", "s0=Host=localhost", "--config", "a.json", "--scripts", "." }, "not both")]
    [TestCase(new[] { "migrations", "apply", "--shard", "s0=Host=localhost", "--scripts", ".", "--parallelism", "x" }, "--parallelism")]
    [TestCase(new[] { "migrations", "apply", "--shard", "s0=Host=localhost", "--scripts", ".", "--parallelism", "0" }, "--parallelism is 0")]
    [TestCase(new[] { "migrations", "apply", "--shard", "s0=Host=localhost", "--scripts", ".", "--lock-timeout=-1" }, "--lock-timeout is negative")]
    [TestCase(new[] { "migrations", "apply", "--shard", "s0=Host=localhost", "--scripts", ".", "--canary", "s9" }, "CanaryShard 's9' is not a shard")]
    [TestCase(new[] { "move", "start", "--shard", "s0=Host=localhost", "--shard", "s1=Host=localhost", "--buckets", "1", "--to", "s1", "--copy-rows-per-second", "0" },
        "--copy-rows-per-second is 0")]
    [TestCase(new[] { "move", "resume", "m1", "--shard", "s0=Host=localhost", "--copy-rows-per-second", "fast" }, "--copy-rows-per-second")]
    [TestCase(new[] { "migrations", "migrate" }, "migrate")]
    [TestCase(new string[0], "Required command was not provided")]
    public async Task Bad_arguments_exit_2_with_a_message_that_names_the_problem(string[] args, string expected)
    {
        WriteScripts(null);
        var run = await ToolRun.RunAsync([.. args.Select(a => a == "." ? Scripts : a)]);
        Assert.That(run.ExitCode, Is.EqualTo(ExitCodes.Usage), run.ToString());
        Assert.That(run.Error, Does.Contain(expected));
        Assert.That(run.ToString(), Does.Not.Contain("hunter2"));
    }

    [Test]
    public async Task A_config_file_that_is_missing_or_invalid_exits_2_naming_the_file_or_the_setting()
    {
        WriteScripts(null);
        var missing = await ToolRun.RunAsync("map", "show", "--config", Path.Combine(_folder, "none.json"));
        Assert.That(missing.ExitCode, Is.EqualTo(ExitCodes.Usage), missing.ToString());
        Assert.That(missing.Error, Does.Contain("none.json' does not exist"));

        var config = Path.Combine(_folder, "appsettings.json");
        await File.WriteAllTextAsync(config, """{ "ShardKit": { "Shards": [ { "Name": "s0", "ConnectionStirng": "Host=localhost" } ] } }""");
        var misspelled = await ToolRun.RunAsync("migrations", "status", "--config", config, "--scripts", Scripts);
        Assert.That(misspelled.ExitCode, Is.EqualTo(ExitCodes.Usage), misspelled.ToString());
        Assert.That(misspelled.Error, Does.Contain("did you mean 'ConnectionString'"));

        var noSection = await ToolRun.RunAsync("map", "show", "--config", config, "--section", "Shards");
        Assert.That(noSection.ExitCode, Is.EqualTo(ExitCodes.Usage), noSection.ToString());
        Assert.That(noSection.Error, Does.Contain("has no 'Shards' section"));
    }

    [Test]
    public async Task Map_show_lists_shards_in_order_with_host_and_buckets_but_no_password()
    {
        var run = await ToolRun.RunAsync("map", "show", "--shard", "a=Host=db0;Database=app;Password=hunter2", "--shard", "b=Host=db1;Port=5433;Database=app");
        Assert.That(run.ExitCode, Is.EqualTo(ExitCodes.Ok), run.ToString());
        Assert.That(run.Output, Does.Contain("Strategy: hash, 1024 buckets"));
        Assert.That(run.Output, Does.Match(@"(?m)^0 +a +db0 +5432 +app +512$").And.Match(@"(?m)^1 +b +db1 +5433 +app +512$"));
        Assert.That(run.Output, Does.Not.Contain("hunter2"));
    }

    private string Scripts => Path.Combine(_folder, "scripts");

    // The repository's sample scripts, with their tables in the test's schema (the history table lives there too).
    private void WriteScripts(MigrationShards? shards)
    {
        Directory.CreateDirectory(Scripts);
        var schema = shards?.Schema ?? "public";
        File.WriteAllText(Path.Combine(Scripts, "0001_create_items.sql"), $"create table {schema}.items (id bigint not null);\ninsert into {schema}.items values (1);\n");
        File.WriteAllText(Path.Combine(Scripts, "0002_items_id.sql"),
            $"{Migration.NoTransactionMarker}\ncreate index concurrently if not exists items_id on {schema}.items (id);\n");
    }

    private string[] Args(MigrationShards shards) =>
    [
        .. shards.Names.SelectMany((n, i) => new[] { "--shard", string.Create(CultureInfo.InvariantCulture, $"{n}={shards.Direct[i]}") }),
        "--scripts", Scripts, "--history-schema", shards.Schema,
    ];
}

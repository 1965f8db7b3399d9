namespace ShardKit.Tests.Migrations;

/// <summary>Loading and validating scripts: no server needed.</summary>
public sealed class MigrationInputTests
{
    private string _folder = "";

    [SetUp]
    public void CreateFolder() => Directory.CreateDirectory(_folder = Path.Combine(Path.GetTempPath(), "shardkit-mig-" + Guid.NewGuid().ToString("N")));

    [TearDown]
    public void RemoveFolder() => Directory.Delete(_folder, recursive: true);

    [Test]
    public void Scripts_load_from_a_folder_in_version_order_with_name_marker_and_checksum()
    {
        File.WriteAllText(Path.Combine(_folder, "0010_add_index.sql"), "-- shardkit:no-transaction\ncreate index concurrently if not exists i on t (x);");
        File.WriteAllText(Path.Combine(_folder, "0002_create_t.sql"), "create table t (x int);");
        File.WriteAllText(Path.Combine(_folder, "notes.txt"), "not a migration");

        var scripts = MigrationScripts.FromFolder(_folder);

        Assert.That(scripts.Select(s => s.ToString()), Is.EqualTo(new[] { "0002_create_t", "0010_add_index" }));
        Assert.That(scripts.Select(s => s.IsTransactional), Is.EqualTo(new[] { true, false }));
        Assert.That(scripts[0].Checksum, Is.EqualTo(new Migration(2, "create_t", "create table t (x int);").Checksum).And.Length.EqualTo(64));
    }

    [Test]
    public void Scripts_load_from_embedded_resources_and_line_endings_do_not_change_the_checksum()
    {
        var scripts = MigrationScripts.FromEmbeddedResources(typeof(MigrationInputTests).Assembly, "ShardKit.Tests.Migrations.Scripts.");

        Assert.That(scripts.Select(s => (s.Version, s.Name, s.IsTransactional)),
            Is.EqualTo(new[] { (1L, "create_items", true), (2L, "items_id", false) }));
        Assert.That(scripts[0].Sql, Does.Contain("\r\n"), "the resource keeps its CRLF endings");
        Assert.That(scripts[0].Checksum, Is.EqualTo(new Migration(1, "x", "create table items (id bigint not null);\ninsert into items values (1);\n").Checksum));
        Assert.That(scripts[0].Checksum, Is.Not.EqualTo(new Migration(1, "x", "create table items (id int not null);\n").Checksum));
    }

    [Test]
    public void A_missing_folder_is_a_migration_error_naming_the_path()
    {
        var missing = Path.Combine(_folder, "nope");
        var error = Assert.Throws<MigrationException>(() => MigrationScripts.FromFolder(missing))!;
        Assert.That(error.Message, Does.Contain(missing).And.Contain("cannot be read"));
        Assert.That(error.InnerException, Is.InstanceOf<DirectoryNotFoundException>());
    }

    [Test]
    public void Duplicate_versions_in_a_folder_are_rejected_naming_both_scripts()
    {
        File.WriteAllText(Path.Combine(_folder, "0001_a.sql"), "select 1");
        File.WriteAllText(Path.Combine(_folder, "001_b.sql"), "select 2");
        var error = Assert.Throws<MigrationException>(() => MigrationScripts.FromFolder(_folder))!;
        Assert.That(error.Message, Does.Contain("0001_a").And.Contain("0001_b").And.Contain("share version 1"));
        Assert.That(error.Version, Is.EqualTo(1));
    }

    [TestCase("create_orders.sql", "VERSION_NAME.sql")]
    [TestCase("0000_zero.sql", "versions start at 1")]
    public void A_badly_named_script_is_rejected_with_the_rule(string file, string expected)
    {
        File.WriteAllText(Path.Combine(_folder, file), "select 1");
        var error = Assert.Throws<MigrationException>(() => MigrationScripts.FromFolder(_folder))!;
        Assert.That(error.Message, Does.Contain(file).And.Contain(expected));
    }

    [Test]
    public void An_empty_script_file_is_rejected()
    {
        File.WriteAllText(Path.Combine(_folder, "0001_empty.sql"), "  \n");
        Assert.That(() => MigrationScripts.FromFolder(_folder), Throws.InstanceOf<MigrationException>().With.Message.Contains("is empty"));
    }

    [Test]
    public void An_assembly_without_matching_resources_is_rejected_naming_the_prefix()
    {
        var error = Assert.Throws<MigrationException>(() => MigrationScripts.FromEmbeddedResources(typeof(MigrationInputTests).Assembly, "No.Such."))!;
        Assert.That(error.Message, Does.Contain("'No.Such.'").And.Contain("EmbeddedResource"));
    }

    [Test]
    public async Task Duplicate_versions_in_code_and_bad_options_are_rejected_before_any_shard_is_touched()
    {
        await using var source = new ShardedDataSourceBuilder().AddShard("a", "Host=127.0.0.1;Port=1").AddShard("b", "Host=127.0.0.1;Port=1").Build();
        Migration[] twice = [new(1, "a", "select 1"), new(1, "b", "select 2")];

        Assert.That(() => source.CreateMigrator(twice), Throws.InstanceOf<MigrationException>().With.Message.Contains("share version 1"));
        Assert.That(() => source.CreateMigrator([new(1, "a", "select 1")], new MigrationOptions { CanaryShard = "c" }),
            Throws.InstanceOf<MigrationException>().With.Message.Contains("'c' is not a shard").And.Message.Contains("a, b"));
        Assert.That(() => source.CreateMigrator([], new MigrationOptions { MaxParallelism = 0 }),
            Throws.InstanceOf<MigrationException>().With.Message.Contains("MaxParallelism is 0"));
        Assert.That(() => new Migration(0, "a", "select 1"), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new Migration(1, "a", " "), Throws.InstanceOf<ArgumentException>());
    }

    [Test]
    public async Task An_unreachable_shard_stops_the_run_before_anything_is_applied_and_status_reports_it()
    {
        await using var source = new ShardedDataSourceBuilder().AddShard("a", "Host=127.0.0.1;Port=1;Password=s3cret-pw;Timeout=2").Build();
        Migration[] migrations = [new(1, "a", "select 1")];

        var error = Assert.ThrowsAsync<MigrationException>(() => source.MigrateAsync(migrations))!;
        Assert.That(error.Shard, Is.EqualTo("a"));
        Assert.That(error.Message, Does.Contain("Nothing was applied"));
        Assert.That(error.ToString(), Does.Not.Contain("s3cret-pw"));

        var status = await source.GetMigrationStatusAsync(migrations);
        Assert.That(status.UnreadableShards, Is.EqualTo(new[] { "a" }));
        Assert.That(status.Shards[0].Error, Is.Not.Empty.And.Not.Contain("s3cret-pw"));
        Assert.That(status.IsUpToDate, Is.False);
    }

    [Test]
    public void Statements_split_at_semicolons_outside_strings_comments_and_bodies()
    {
        const string Sql = """
            -- shardkit:no-transaction
            create table t (x text default 'a;b');
            /* a; comment */ create function f() returns int language sql as $$ select 1; $$;
            ;
            comment on table t is 'x'
            """;
        var statements = MigrationSql.Statements(Sql);
        Assert.That(statements, Has.Count.EqualTo(3));
        Assert.That(statements[0], Does.EndWith("default 'a;b')"));
        Assert.That(statements[1], Does.EndWith("$$ select 1; $$"));
        Assert.That(statements[2], Is.EqualTo("comment on table t is 'x'"));
    }

    [TestCase("create index concurrently if not exists idx on app.t (x)", "app.idx")]
    [TestCase("CREATE UNIQUE INDEX CONCURRENTLY \"Idx\" ON t (x)", "\"Idx\"")]
    [TestCase("create index concurrently s.idx on only t (x)", "s.idx")]
    [TestCase("create index concurrently on t (x)", null)]
    [TestCase("create index idx on t (x)", null)]
    [TestCase("alter table t add column y int", null)]
    public void Concurrent_index_names_are_read_qualified_by_their_table_schema(string statement, string? expected) =>
        Assert.That(MigrationSql.ConcurrentIndexName(statement), Is.EqualTo(expected));
}

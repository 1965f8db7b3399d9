using Dapper;
using Npgsql;

namespace ShardKit.Tests.Resharding;

[TestFixture]
public sealed class StoredMapTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    // Switches one bucket's owner the way a move's last steps do (source gives up, target takes, catalog names it), with no rows.
    // movedTo: what the source's fence records as the bucket's new owner (a move records the target; null records none).
    internal static async Task SwitchByHandAsync(ReshardingShards shards, int bucket, int from, int to, bool notify = true, string? movedTo = null)
    {
        await using (var source = await shards.OpenAsync(from))
        {
            await source.ExecuteAsync("update shardkit.bucket_owner set owned = false, epoch = epoch + 1, moved_to = @movedTo where bucket = @bucket",
                new { bucket, movedTo });
        }

        await using (var target = await shards.OpenAsync(to))
        {
            await target.ExecuteAsync("update shardkit.bucket_owner set owned = true, epoch = epoch + 1 where bucket = @bucket", new { bucket });
        }

        await using var catalog = await shards.OpenAsync(0);
        await catalog.ExecuteAsync("""
            update shardkit.map_bucket set shard = @shard where bucket = @bucket;
            update shardkit.map set epoch = epoch + 1;
            """, new { bucket, shard = $"s{to}" });
        if (notify)
        {
            await catalog.ExecuteAsync("select pg_notify('shardkit_map', 'x')");
        }
    }

    // An app that hears of no move by itself: it checks hourly, and the hand switches send no notification. Its listener
    // reads the catalog right after it starts listening; one still starting would read after the switch and see it. So
    // the catalog's epoch is bumped and notified first, and the app is used once it has read that (and any read a
    // notification during its first read causes has passed).
    internal static async Task<ShardedDataSource> StaleAppAsync(ReshardingShards shards, ShardedDataSource? app = null)
    {
        app ??= shards.NewSource(configure: o => o.CheckInterval = TimeSpan.FromHours(1));
        await using (var catalog = await shards.OpenAsync(0))
        {
            var bumped = await catalog.ExecuteScalarAsync<long>("update shardkit.map set epoch = epoch + 1 returning epoch");
            await catalog.ExecuteAsync("select pg_notify('shardkit_map', 'x')");
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (app.Map.Epoch < bumped && DateTime.UtcNow < deadline)
            {
                await Task.Delay(20);
            }

            Assert.That(app.Map.Epoch, Is.EqualTo(bumped), "the app's listener read the catalog");
        }

        await Task.Delay(200);
        return app;
    }

    // Shards seeded, an app on the old map (StaleAppAsync), then bucket 1 switched from s0 to s1 without telling it.
    // Keys by the app's old map: Moving (bucket 1: s0, now s1), Staying (bucket 2: s0), Other (the last bucket: s1).
    private sealed record OldMap(ReshardingShards Shards, ShardedDataSource App, long Moving, long Staying, long Other) : IAsyncDisposable
    {
        public ValueTask DisposeAsync() => Shards.DisposeAsync();

        /// <summary>Puts the row of <see cref="Moving"/> on its new owner, s1, with <c>n = 1</c> (the old owner has none).</summary>
        public async Task MovedRowAsync()
        {
            await using var owner = await Shards.OpenAsync(1);
            await owner.ExecuteAsync("insert into items (id, payload, n) values (@key, 'moved', 1)", new { key = Moving });
        }
    }

    private static async Task<OldMap> OldMapAsync()
    {
        var shards = await ReshardingShards.CreateAsync(2);
        await shards.NewSource().Resharding.SeedAsync([Items]);
        var app = await StaleAppAsync(shards);
        var old = new OldMap(shards, app, KeyIn(app.Map, 1), KeyIn(app.Map, 2), KeyIn(app.Map, shards.Buckets - 1));
        await SwitchByHandAsync(shards, bucket: 1, from: 0, to: 1, notify: false);
        return old;
    }

    internal static long KeyIn(ShardMap map, int bucket) =>
        Enumerable.Range(1, 1_000_000).Select(i => (long)i).First(k => map.BucketOf(k) == bucket);

    [Test]
    public async Task An_unseeded_catalog_leaves_the_configured_spread_and_seeding_stores_it_at_epoch_1()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var source = shards.NewSource();
        Assert.That(source.Map.Epoch, Is.EqualTo(0));

        var epoch = await source.Resharding.SeedAsync([Items]);

        Assert.That(epoch, Is.EqualTo(1));
        Assert.That(source.Map.Epoch, Is.EqualTo(1));
        Assert.That(source.Map.Buckets!.BucketsOf(1), Is.EqualTo(Enumerable.Range(shards.Buckets / 2, shards.Buckets / 2)));
        Assert.That(await shards.ScalarAsync<int>(1, "select count(*)::int from shardkit.bucket_owner where owned"), Is.EqualTo(shards.Buckets / 2));
        // Seeding again keeps the stored map.
        Assert.That(await source.Resharding.SeedAsync([Items]), Is.EqualTo(1));
    }

    [Test]
    public async Task A_write_on_a_shard_that_does_not_own_the_bucket_is_refused_inside_PostgreSQL_also_without_ShardKit()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var source = shards.NewSource();
        await source.Resharding.SeedAsync([Items]);
        var key = KeyIn(source.Map, 0); // bucket 0 is s0's

        await using var wrong = await shards.OpenAsync(1);
        var raw = Assert.ThrowsAsync<PostgresException>(() => wrong.ExecuteAsync("insert into items (id) values (@key)", new { key }));
        Assert.That(raw!.SqlState, Is.EqualTo(ShardBucketMovedException.SqlState));

        await using var db = source.CreateConnection();
        var typed = Assert.ThrowsAsync<ShardBucketMovedException>(() =>
            db.OnShard("s1").ExecuteAsync("insert into items (id) values (@key)", new { key }));
        Assert.That(typed!.Shard, Is.EqualTo("s1"));
        Assert.That(typed.Bucket, Is.EqualTo(0));
        Assert.That(await shards.ScalarAsync<long>(1, "select count(*) from items"), Is.EqualTo(0));

        // Updates and deletes of rows of a bucket the shard does not own are refused too; a bulk COPY as well.
        await using var right = await shards.OpenAsync(0);
        await right.ExecuteAsync("insert into items (id) values (@key)", new { key });
        await right.ExecuteAsync("update shardkit.bucket_owner set owned = false where bucket = 0");
        Assert.That(Assert.ThrowsAsync<PostgresException>(() => right.ExecuteAsync("update items set n = 1"))!.SqlState, Is.EqualTo("SK001"));
        Assert.That(Assert.ThrowsAsync<PostgresException>(() => right.ExecuteAsync("delete from items"))!.SqlState, Is.EqualTo("SK001"));
        Assert.That(Assert.ThrowsAsync<PostgresException>(async () =>
        {
            await using var copy = await right.BeginBinaryImportAsync("copy items (id) from stdin (format binary)");
            await copy.StartRowAsync();
            await copy.WriteAsync(Enumerable.Range(1, 1_000_000).Select(i => (long)i).Where(k => source.Map.BucketOf(k) == 0).Skip(1).First());
            await copy.CompleteAsync();
        })!.SqlState, Is.EqualTo("SK001"));
        Assert.That(await right.ExecuteScalarAsync<int>("select n from items"), Is.EqualTo(0));
    }

    [Test]
    public async Task A_routed_write_on_an_old_map_is_run_again_on_the_new_owner()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        // An app that hears of no move by itself: a check interval of an hour, and the switch sends no notification.
        var app = await StaleAppAsync(shards);
        var key = KeyIn(app.Map, 1);
        Assert.That(app.Map.ShardFor(key), Is.EqualTo("s0"));

        var before = app.Map.Epoch;
        await SwitchByHandAsync(shards, bucket: 1, from: 0, to: 1, notify: false);
        Assert.That(app.Map.ShardFor(key), Is.EqualTo("s0"), "the app still routes by its old map");

        await using var db = app.CreateConnection();
        var affected = await db.ExecuteAsync("insert into items (id, payload) values (@Id, @Payload)", new Item { Id = key, Payload = "moved" });

        Assert.That(affected, Is.EqualTo(1));
        Assert.That(app.Map.Epoch, Is.EqualTo(before + 1), "the refusal brought the switch's map");
        Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from items"), Is.EqualTo(0), "nothing on the old owner");
        Assert.That(await shards.ScalarAsync<string>(1, "select payload from items where id = @key", new { key }), Is.EqualTo("moved"));
        // Reads follow the new map too.
        Assert.That((await db.QueryAsync<Item>("select * from items where id = @Id", new Item { Id = key })).Single().Payload, Is.EqualTo("moved"));
    }

    // Also when the app's connection strings leave out the server's error details (Npgsql's default hides the detail).
    [TestCase(false, true)]
    [TestCase(true, true)]
    [TestCase(false, false)]
    [TestCase(true, false)]
    public async Task A_refusal_that_names_the_new_owner_sends_the_write_there_without_waiting_for_the_map(bool sync, bool errorDetail)
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        await shards.NewSource().Resharding.SeedAsync([Items]);
        var app = await StaleAppAsync(shards, shards.NewSource(configure: o => o.CheckInterval = TimeSpan.FromHours(1), errorDetail: errorDetail));
        var key = KeyIn(app.Map, 1);
        var before = app.Map.Epoch;
        await SwitchByHandAsync(shards, bucket: 1, from: 0, to: 1, notify: false, movedTo: "s1");

        await using var db = app.CreateConnection();
        const string insert = "insert into items (id, payload) values (@Id, @Payload)";
        var item = new Item { Id = key, Payload = "hinted" };
        var affected = sync ? db.Execute(insert, item) : await db.ExecuteAsync(insert, item);

        Assert.That(affected, Is.EqualTo(1));
        Assert.That(app.Map.Epoch, Is.EqualTo(before), "the write went by the refusal's word, not by a newer map");
        Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from items"), Is.EqualTo(0), "nothing on the old owner");
        Assert.That(await shards.ScalarAsync<string>(1, "select payload from items where id = @key", new { key }), Is.EqualTo("hinted"));
        var refusal = Assert.ThrowsAsync<ShardBucketMovedException>(() =>
            db.OnShard("s0").ExecuteAsync("insert into items (id) values (@key)", new { key }));
        Assert.That((refusal!.Shard, refusal.Bucket, refusal.MovedTo), Is.EqualTo(("s0", 1, "s1")));
    }

    // The refusal's word is only a hint: a shard it names that does not own the bucket refuses in turn (its own fence),
    // and one the app does not list is not tried; either way the write waits for the map and lands on the real owner.
    [TestCase("s2")]
    [TestCase("nowhere")]
    [TestCase("s0")]
    public async Task A_refusal_naming_a_wrong_owner_costs_a_wait_for_the_map_never_a_misplaced_row(string movedTo)
    {
        await using var shards = await ReshardingShards.CreateAsync(3);
        await shards.NewSource().Resharding.SeedAsync([Items]);
        var app = await StaleAppAsync(shards);
        var key = KeyIn(app.Map, 1);
        Assert.That(app.Map.ShardFor(key), Is.EqualTo("s0"));
        var before = app.Map.Epoch;
        await SwitchByHandAsync(shards, bucket: 1, from: 0, to: 1, notify: false, movedTo: movedTo);

        await using var db = app.CreateConnection();
        Assert.That(await db.ExecuteAsync("insert into items (id, payload) values (@Id, @Payload)", new Item { Id = key, Payload = "owner" }), Is.EqualTo(1));

        Assert.That(app.Map.Epoch, Is.GreaterThan(before), "the write waited for the catalog's map");
        Assert.That(await shards.ScalarAsync<string>(1, "select payload from items where id = @key", new { key }), Is.EqualTo("owner"));
        Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from items") + await shards.ScalarAsync<long>(2, "select count(*) from items"),
            Is.EqualTo(0), "nothing on the shards that do not own the bucket");
    }

    // A write that does not name its buckets (here: text with a '$', which ShardKit leaves as it is) is refused by the
    // rows it touches. Sent where a stale word points (a shard that neither owns the bucket nor keeps its rows) it
    // would touch nothing and pass as 0 rows; so it waits for the map instead and updates the owner's row.
    [TestCase(false)]
    [TestCase(true)]
    public async Task An_unnamed_write_refused_with_a_wrong_new_owner_waits_for_the_map_instead_of_updating_nothing_there(bool sync)
    {
        await using var shards = await ReshardingShards.CreateAsync(3);
        await shards.NewSource().Resharding.SeedAsync([Items]);
        var app = await StaleAppAsync(shards);
        var key = KeyIn(app.Map, 1);
        var before = app.Map.Epoch;
        await SwitchByHandAsync(shards, bucket: 1, from: 0, to: 1, notify: false, movedTo: "s2");
        foreach (var (shard, payload) in new[] { (0, "old copy"), (1, "owner") })
        {
            await using var connection = await shards.OpenAsync(shard);
            await connection.ExecuteAsync("set shardkit.fence = off; insert into items (id, payload) values (@key, @payload)", new { key, payload });
        }

        await using var db = app.CreateConnection();
        const string update = "update items set payload = 'costs $5' where id = @Id";
        var affected = sync ? db.Execute(update, new Item { Id = key }) : await db.ExecuteAsync(update, new Item { Id = key });

        Assert.That(affected, Is.EqualTo(1));
        Assert.That(app.Map.Epoch, Is.GreaterThan(before), "the write waited for the catalog's map");
        Assert.That(await shards.ScalarAsync<string>(1, "select payload from items where id = @key", new { key }), Is.EqualTo("costs $5"));
        Assert.That(await shards.ScalarAsync<string>(0, "select payload from items where id = @key", new { key }), Is.EqualTo("old copy"));
    }

    [TestCase("bucket=7 epoch=3", 7, 3L, null)]
    [TestCase("bucket=7 epoch=3 moved_to=s1", 7, 3L, "s1")]
    [TestCase("bucket=12 epoch=9 moved_to=shard two 'b'", 12, 9L, "shard two 'b'")]
    [TestCase("bucket=12 epoch=9 moved_to=", 12, 9L, null)]
    [TestCase(null, -1, 0L, null)]
    public void A_refusal_reads_bucket_epoch_and_new_owner_from_the_fences_detail(string? detail, int bucket, long epoch, string? movedTo)
    {
        var error = new ShardBucketMovedException("s0", new PostgresException("this shard does not own bucket", "ERROR", "ERROR",
            ShardBucketMovedException.SqlState, detail));

        Assert.That((error.Bucket, error.Epoch, error.MovedTo), Is.EqualTo((bucket, epoch, movedTo)));
    }

    // Npgsql replaces the detail with a notice unless the connection string includes error details; the fence's message
    // carries the same figures after "; ".
    [TestCase("bucket=7 epoch=3", 7, 3L, null)]
    [TestCase("bucket=12 epoch=9 moved_to=shard; two 'b'", 12, 9L, "shard; two 'b'")]
    [TestCase(null, -1, 0L, null)]
    public void A_refusal_reads_its_figures_from_the_message_when_the_detail_is_redacted(string? figures, int bucket, long epoch, string? movedTo)
    {
        var message = figures is null ? "this shard does not own bucket 7" : $"this shard does not own bucket {bucket}; {figures}";
        var error = new ShardBucketMovedException("s0", new PostgresException(message, "ERROR", "ERROR", ShardBucketMovedException.SqlState,
            "Detail redacted as it may contain sensitive data. Specify 'Include Error Detail' in the connection string to include this information."));

        Assert.That((error.Bucket, error.Epoch, error.MovedTo), Is.EqualTo((bucket, epoch, movedTo)));
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task A_key_list_write_split_on_an_old_map_runs_only_the_refused_part_again(bool sync)
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        long moving = f.Moving, staying = f.Staying, other = f.Other;
        Assert.That((app.Map.ShardFor(moving), app.Map.ShardFor(staying), app.Map.ShardFor(other)), Is.EqualTo(("s0", "s0", "s1")), "the app's old map");
        await using var db = app.CreateConnection();
        // s0's part (moving + staying) is refused whole by the fence; s1's part applies. Only s0's part runs again,
        // split by the new map: moving to s1, staying to s0.
        var sql = "insert into items (id, payload) select k, 'list' from unnest(@Id) k";
        var affected = sync
            ? db.Execute(sql, new { Id = new[] { moving, staying, other } })
            : await db.ExecuteAsync(sql, new { Id = new[] { moving, staying, other } });

        Assert.That(affected, Is.EqualTo(3));
        Assert.That(await shards.ScalarAsync<long[]>(0, "select array_agg(id order by id) from items"), Is.EqualTo(new[] { staying }));
        Assert.That(await shards.ScalarAsync<long[]>(1, "select array_agg(id order by id) from items"), Is.EqualTo(new[] { moving, other }.Order()));
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task An_item_list_over_two_shards_on_an_old_map_writes_every_item_once(bool sync)
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        long moving = f.Moving, staying = f.Staying, other = f.Other;
        await using var db = app.CreateConnection();
        var items = new[] { new Item { Id = moving, Payload = "a" }, new Item { Id = staying, Payload = "b" }, new Item { Id = other, Payload = "c" } };
        const string sql = "insert into items (id, payload) values (@Id, @Payload)";
        var affected = sync ? db.Execute(sql, items) : await db.ExecuteAsync(sql, items);

        Assert.That(affected, Is.EqualTo(3));
        Assert.That(await shards.ScalarAsync<long[]>(0, "select array_agg(id order by id) from items"), Is.EqualTo(new[] { staying }));
        Assert.That(await shards.ScalarAsync<long[]>(1, "select array_agg(id order by id) from items"), Is.EqualTo(new[] { moving, other }.Order()),
            "s1's part applied once, not again when s0's refused part made the batch run a second time");
    }

    // After a finished move the old owner has deleted its copies: an update or delete sent there by an old map touches no
    // row. The write names its bucket to the fence, so it is refused all the same and runs on the new owner (before,
    // it succeeded with 0 rows and the write was lost).
    [TestCase("update", false)]
    [TestCase("update", true)]
    [TestCase("delete", false)]
    [TestCase("delete", true)]
    [TestCase("forkey", false)]
    [TestCase("dynamic", false)]
    [TestCase("dictionary", true)]
    public async Task A_write_that_finds_no_row_on_the_old_owner_is_refused_there_and_runs_on_the_new_owner(string kind, bool sync)
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        var key = f.Moving;
        await f.MovedRowAsync();

        await using var db = app.CreateConnection();
        var sql = kind == "delete" ? "delete from items where id = @Id" : "update items set n = n + 1 where id = @Id";
        var dynamic = new DynamicParameters();
        dynamic.Add("id", key);
        object parameters = kind switch
        {
            "dynamic" => dynamic,
            "dictionary" => new Dictionary<string, object> { ["id"] = key },
            _ => new Item { Id = key },
        };
        var affected = kind == "forkey" ? await db.ForKey(key).ExecuteAsync(sql, new { Id = key })
            : sync ? db.Execute(sql, parameters)
            : await db.ExecuteAsync(sql, parameters);

        Assert.That(affected, Is.EqualTo(1));
        Assert.That(app.Map.ShardFor(key), Is.EqualTo("s1"), "the refusal brought the new map");
        Assert.That(await shards.ScalarAsync<int?>(1, "select n from items where id = @key", new { key }), Is.EqualTo(kind == "delete" ? null : 2));
    }

    // The old owner keeps its copies until the move's cleanup: an insert an old map sends there, of a key the new owner
    // deleted, hit that copy's primary key (a duplicate error, the write lost) before the statement's trigger could refuse
    // it. The named bucket is now checked before the write runs: refused there, it runs on the new owner.
    [TestCase("execute", false)]
    [TestCase("execute", true)]
    [TestCase("returning", false)]
    [TestCase("list", false)]
    public async Task An_insert_an_old_map_sends_to_an_owner_that_still_keeps_a_copy_is_refused_there_not_failed_as_a_duplicate(string kind, bool sync)
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        var key = f.Moving;
        await using (var oldOwner = await shards.OpenAsync(0))
        {
            await oldOwner.ExecuteAsync("set shardkit.fence = off; insert into items (id, payload, n) values (@key, 'copy', 7)", new { key });
        }

        await using var db = app.CreateConnection();
        const string insert = "insert into items (id, payload, n) values (@Id, @Payload, 1)";
        var item = new Item { Id = key, Payload = "new" };
        var affected = kind switch
        {
            "returning" => (await db.QueryAsync<long>(insert + " returning id", item)).Count(),
            "list" => await db.ExecuteAsync(insert, new[] { item, new Item { Id = f.Other, Payload = "other" } }) - 1,
            _ => sync ? db.Execute(insert, item) : await db.ExecuteAsync(insert, item),
        };

        Assert.That(affected, Is.EqualTo(1));
        Assert.That(await shards.ScalarAsync<string>(1, "select payload from items where id = @key", new { key }), Is.EqualTo("new"));
        Assert.That(await shards.ScalarAsync<string>(0, "select payload || n from items where id = @key", new { key }), Is.EqualTo("copy7"),
            "the old owner's copy is untouched (the move's cleanup deletes it)");
    }

    // A write sent through Query or ExecuteScalar (… returning) names its bucket as Execute does: on an old map the old
    // owner, where it finds no row, refuses it, and it runs on the new owner; the caller gets the new owner's rows. Before,
    // it returned no row and the write was lost.
    [TestCase("query", false)]
    [TestCase("query", true)]
    [TestCase("first", false)]
    [TestCase("single", true)]
    [TestCase("scalar", false)]
    [TestCase("scalar", true)]
    [TestCase("with", false)]
    [TestCase("split", false)]
    [TestCase("split", true)]
    public async Task A_write_through_Query_or_ExecuteScalar_that_finds_no_row_on_the_old_owner_runs_on_the_new_owner(string kind, bool sync)
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        var key = f.Moving;
        await f.MovedRowAsync();

        await using var db = app.CreateConnection();
        var sql = kind == "with"
            ? "with changed as (update items set n = n + 1 where id = @Id returning n) select n from changed"
            : "update items set n = n + 1 where id = @Id returning n";
        var item = new Item { Id = key };
        int? n = kind switch
        {
            "query" or "with" => sync ? db.Query<int>(sql, item).Single() : (await db.QueryAsync<int>(sql, item)).Single(),
            "first" => sync ? db.QueryFirst<int>(sql, item) : await db.QueryFirstAsync<int>(sql, item),
            "single" => sync ? db.QuerySingleOrDefault<int?>(sql, item) : await db.QuerySingleOrDefaultAsync<int?>(sql, item),
            "scalar" => sync ? db.ExecuteScalar<int>(sql, item) : await db.ExecuteScalarAsync<int>(sql, item),
            _ => null,
        };
        if (kind == "split")
        {
            // A key list over two shards: the old owner refuses its part, which runs again on the new owner; the part
            // the other shard applied is not sent twice, and the caller gets both parts' rows.
            await using (var other = await shards.OpenAsync(1))
            {
                await other.ExecuteAsync("insert into items (id, payload, n) values (@key, 'other', 5)", new { key = f.Other });
            }

            const string list = "update items set n = n + 1 where id = any(@Id) returning n";
            var ids = new { Id = new[] { key, f.Other } };
            var rows = sync ? db.Query<int>(list, ids).ToList() : (await db.QueryAsync<int>(list, ids)).ToList();

            Assert.That(rows, Is.EquivalentTo(new[] { 2, 6 }));
            Assert.That(await shards.ScalarAsync<int>(1, "select n from items where id = @key", new { key }), Is.EqualTo(2));
            Assert.That(await shards.ScalarAsync<int>(1, "select n from items where id = @key", new { key = f.Other }), Is.EqualTo(6), "applied once");
            Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from items"), Is.EqualTo(0));
            return;
        }

        Assert.That(n, Is.EqualTo(2));
        Assert.That(app.Map.ShardFor(key), Is.EqualTo("s1"), "the refusal brought the new map");
        Assert.That(await shards.ScalarAsync<int>(1, "select n from items where id = @key", new { key }), Is.EqualTo(2));
    }

    // A refused part of a write through Query that then fails on the new owner: the caller is told what applied where,
    // the other shard's part included.
    [Test]
    public async Task A_refused_part_of_a_write_through_Query_that_fails_when_run_again_names_every_applied_row()
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        await using (var owner = await shards.OpenAsync(1))
        {
            await owner.ExecuteAsync("insert into items (id, payload, n) values (@moving, 'moved', 2147483647), (@other, 'other', 5)",
                new { moving = f.Moving, other = f.Other });
        }

        await using var db = app.CreateConnection();
        var error = Assert.ThrowsAsync<BroadcastWriteException>(() =>
            db.QueryAsync<int>("update items set n = n + 1 where id = any(@Id) returning n", new { Id = new[] { f.Moving, f.Other } }));

        Assert.That(error!.Failures.Single().Error, Is.InstanceOf<PostgresException>().With.Property(nameof(PostgresException.SqlState)).EqualTo("22003"),
            error.ToString());
        Assert.That(error.AffectedRows, Is.EqualTo(new Dictionary<string, int> { ["s1"] = 1 }), "the other shard's part applied once");
        Assert.That(await shards.ScalarAsync<int>(1, "select n from items where id = @key", new { key = f.Other }), Is.EqualTo(6));
    }

    // ForId routes by the bucket an id carries: on an old map its write is refused by the old owner and runs on the new one.
    [TestCase(false)]
    [TestCase(true)]
    public async Task A_write_by_id_that_finds_no_row_on_the_old_owner_runs_on_the_new_owner(bool returning)
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        const int bucketShift = ShardId.AppSequenceBits + ShardId.WorkerBits + 1;
        // An id that carries bucket 1 (s0 by the old map, s1 now) and whose own hash bucket s1 owns, so the row may live there.
        var id = Enumerable.Range(0, 1 << 9).Select(seq => (1000L << (bucketShift + ShardId.BucketBits)) | (1L << bucketShift) | (long)seq)
            .First(candidate => app.Map.BucketOf(candidate) != 1 && app.Map.ShardFor(candidate) == "s1");
        Assert.That(ShardId.BucketOf(id), Is.EqualTo(1));
        await using (var owner = await shards.OpenAsync(1))
        {
            await owner.ExecuteAsync("insert into items (id, n) values (@id, 1)", new { id });
        }

        await using var db = app.CreateConnection();
        Assert.That(db.ForId(id).Shard, Is.EqualTo("s0"), "the app still has the old map");
        var changed = returning
            ? await db.ForId(id).QuerySingleAsync<int>("update items set n = n + 1 where id = @id returning 1", new { id })
            : await db.ForId(id).ExecuteAsync("update items set n = n + 1 where id = @id", new { id });

        Assert.That(changed, Is.EqualTo(1));
        Assert.That(db.ForId(id).Shard, Is.EqualTo("s1"), "the refusal brought the new map");
        Assert.That(await shards.ScalarAsync<int>(1, "select n from items where id = @id", new { id }), Is.EqualTo(2));
    }

    [Test]
    public async Task Statements_that_cannot_run_in_a_transaction_block_get_no_fence_statement_in_front()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        await using var db = admin.CreateConnection();
        var key = KeyIn(admin.Map, 1);

        await db.ForKey(key).ExecuteAsync("vacuum items");
        await db.ExecuteAsync("create index concurrently if not exists items_n on items (n) -- @Id", new Item { Id = key });

        Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from pg_indexes where indexname = 'items_n'"), Is.EqualTo(1));
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task Key_and_item_lists_that_find_no_row_on_the_old_owner_update_every_row_once(bool sync)
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        long moving = f.Moving, staying = f.Staying, other = f.Other;
        await using (var s0 = await shards.OpenAsync(0))
        {
            await s0.ExecuteAsync("insert into items (id, n) values (@staying, 0)", new { staying });
        }

        await using (var s1 = await shards.OpenAsync(1))
        {
            await s1.ExecuteAsync("insert into items (id, n) values (@moving, 0), (@other, 0)", new { moving, other });
        }

        await using var db = app.CreateConnection();
        var keys = new[] { moving, staying, other };
        const string listSql = "update items set n = n + 1 where id = any(@Id)";
        var listed = sync ? db.Execute(listSql, new { Id = keys }) : await db.ExecuteAsync(listSql, new { Id = keys });
        var items = keys.Select(k => new Item { Id = k }).ToArray();
        const string itemSql = "update items set n = n + 10 where id = @Id";
        var itemized = sync ? db.Execute(itemSql, items) : await db.ExecuteAsync(itemSql, items);

        Assert.That((listed, itemized), Is.EqualTo((3, 3)));
        var rows = (await shards.AllRowsAsync()).ToDictionary(r => r.Id, r => (r.Shard, r.N));
        Assert.That(rows, Is.EquivalentTo(new Dictionary<long, (int, int)> { [moving] = (1, 11), [staying] = (0, 11), [other] = (1, 11) }));
    }

    // The old owner refuses its group (it names the moved bucket) before any shard commits: the batch runs again whole by
    // the newer map, and every item is applied once, on its owner.
    [Test]
    public async Task A_batch_that_finds_no_row_on_the_old_owner_runs_again_whole_on_the_new_map()
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        long moving = f.Moving, staying = f.Staying;
        await using (var s0 = await shards.OpenAsync(0))
        {
            await s0.ExecuteAsync("insert into items (id, n) values (@staying, 0)", new { staying });
        }

        await using (var s1 = await shards.OpenAsync(1))
        {
            await s1.ExecuteAsync("insert into items (id, n) values (@moving, 0)", new { moving });
        }

        await using var db = app.CreateConnection();
        var result = await db.ExecuteBatchAsync("update items set n = n + 1 where id = @Id", new[] { new Item { Id = staying }, new Item { Id = moving } });

        Assert.That(result.Total, Is.EqualTo(2));
        Assert.That(await shards.ScalarAsync<int>(0, "select n from items where id = @staying", new { staying }), Is.EqualTo(1), "applied once");
        Assert.That(await shards.ScalarAsync<int>(1, "select n from items where id = @moving", new { moving }), Is.EqualTo(1), "on the new owner");
        Assert.That(await shards.ScalarAsync<int>(0, "select count(*)::int from items where id = @moving", new { moving }), Is.Zero);
    }

    // Inside a distributed transaction the refusal reaches the caller, and nothing of the batch is kept.
    [Test]
    public async Task A_batch_refused_inside_a_distributed_transaction_reaches_the_caller()
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        long moving = f.Moving, staying = f.Staying;
        await using (var s0 = await shards.OpenAsync(0))
        {
            await s0.ExecuteAsync("insert into items (id, n) values (@staying, 0)", new { staying });
        }

        await using var db = app.CreateConnection();
        await using (var transaction = await db.BeginDistributedTransactionAsync())
        {
            Assert.CatchAsync(() => db.ExecuteBatchAsync("update items set n = n + 1 where id = @Id",
                new[] { new Item { Id = staying }, new Item { Id = moving } }));
        }

        Assert.That(await shards.ScalarAsync<int>(0, "select n from items where id = @staying", new { staying }), Is.Zero, "rolled back");
    }

    [Test]
    public async Task A_refused_item_part_that_fails_when_run_again_names_the_callers_item_and_every_applied_row()
    {
        await using var f = await OldMapAsync();
        var (shards, app) = (f.Shards, f.App);
        long moving = f.Moving, staying = f.Staying, other = f.Other;
        await using (var owner = await shards.OpenAsync(1))
        {
            await owner.ExecuteAsync("insert into items (id, payload) values (@moving, 'there already')", new { moving });
        }

        await using var db = app.CreateConnection();
        var items = new[] { new Item { Id = staying, Payload = "a" }, new Item { Id = moving, Payload = "b" }, new Item { Id = other, Payload = "c" } };
        var error = Assert.ThrowsAsync<BroadcastWriteException>(() => db.ExecuteAsync("insert into items (id, payload) values (@Id, @Payload)", items));

        var item = error!.Failures.Single().Error as BatchItemException;
        Assert.That((item?.ItemIndex, item?.Shard), Is.EqualTo(((int?)1, "s1")), "the index in the caller's list, not in the rerun part");
        Assert.That(error.AffectedRows.Values.Sum(), Is.EqualTo(2), "other (first round) and staying (run again) applied");
        Assert.That(await shards.ScalarAsync<long[]>(0, "select array_agg(id order by id) from items"), Is.EqualTo(new[] { staying }));
        Assert.That(await shards.ScalarAsync<long>(1, "select count(*) from items"), Is.EqualTo(2));
    }

    [Test]
    public async Task A_notification_brings_the_new_map_without_any_write()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var app = shards.NewSource(configure: o => o.CheckInterval = TimeSpan.FromHours(1));
        await app.Resharding.SeedAsync([Items]);

        await SwitchByHandAsync(shards, bucket: 2, from: 0, to: 1);

        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (app.Map.Epoch < 2 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        Assert.That(app.Map.Epoch, Is.EqualTo(2), string.Join("\n", shards.Logs.Logs.Select(l => l.Message)));
        Assert.That(app.Map.Buckets!.ShardOfBucket(2), Is.EqualTo(1));
    }

    [Test]
    public async Task Inside_a_transaction_the_refusal_reaches_the_caller_and_nothing_is_written()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var app = shards.NewSource(configure: o => o.CheckInterval = TimeSpan.FromHours(1));
        await app.Resharding.SeedAsync([Items]);
        await StaleAppAsync(shards, app);
        var key = KeyIn(app.Map, 3);
        await SwitchByHandAsync(shards, bucket: 3, from: 0, to: 1, notify: false);

        await using var db = app.CreateConnection();
        await using var transaction = await db.ForKey(key).BeginTransactionAsync();
        var error = Assert.ThrowsAsync<ShardBucketMovedException>(() =>
            db.ExecuteAsync("insert into items (id) values (@Id)", new Item { Id = key }));
        Assert.That(error!.Shard, Is.EqualTo("s0"));
        await transaction.RollbackAsync();
        Assert.That((await shards.AllRowsAsync()).Count, Is.EqualTo(0));
    }

    [Test]
    public async Task A_catalog_that_cannot_be_read_keeps_the_last_map()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var app = shards.NewSource(configure: o => o.CheckInterval = TimeSpan.FromMilliseconds(50));
        await app.Resharding.SeedAsync([Items]);
        await using (var catalog = await shards.OpenAsync(0))
        {
            await catalog.ExecuteAsync("alter table shardkit.map rename to map_gone");
        }

        await Task.Delay(300);
        Assert.That(app.Map.Epoch, Is.EqualTo(1), "an unreadable catalog changes nothing");
        await using var db = app.CreateConnection();
        Assert.That(await db.ExecuteAsync("insert into items (id) values (@Id)", new Item { Id = 7 }), Is.EqualTo(1));
    }

    [Test]
    public void Bad_stored_map_settings_are_refused_at_build_time()
    {
        var error = Assert.Throws<ShardConfigurationException>(() => new ShardedDataSourceBuilder()
            .AddShard("a", "Host=127.0.0.1;Port=1").UseStoredMap("nope", o => o.CheckInterval = TimeSpan.Zero).Build());
        Assert.That(error!.Message, Does.Contain("'nope' is not a configured shard").And.Contain("CheckInterval"));

        var modulo = Assert.Throws<ShardConfigurationException>(() => new ShardedDataSourceBuilder()
            .AddShard("a", "Host=127.0.0.1;Port=1").UseModuloSharding().UseStoredMap("a").Build());
        Assert.That(modulo!.Message, Does.Contain("needs hash sharding"));
    }

    [Test]
    public async Task Resharding_without_a_stored_map_or_seed_says_what_to_do()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var plain = shards.NewSource(stored: false);
        Assert.That(Assert.ThrowsAsync<InvalidOperationException>(() => plain.Resharding.MoveBucketsAsync([1], "s1"))!.Message,
            Does.Contain("UseStoredMap"));

        var unseeded = shards.NewSource();
        Assert.That(Assert.ThrowsAsync<ShardMoveException>(() => unseeded.Resharding.MoveBucketsAsync([1], "s1"))!.Message,
            Does.Contain("seed"));
    }
}

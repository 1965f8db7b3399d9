using Dapper;
using static ShardKit.Tests.Resharding.StoredMapTests;

namespace ShardKit.Tests.Resharding;

// Reads by key of a bucket under a move name it to the shard's fence: a read sent by a map older than the switch is
// refused by the old owner and runs on the new one, instead of reading the old owner's copy (stale) or, after the
// move's cleanup deleted it, nothing.
[TestFixture]
public sealed class ReadFenceTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    private sealed record Moved(ReshardingShards Shards, ShardedDataSource App, long Moving, long Staying, long Other, long EpochBefore) : IAsyncDisposable
    {
        public ValueTask DisposeAsync() => Shards.DisposeAsync();
    }

    // An app whose map knows bucket 1 is moving (s0 to s1) but not that it switched: the move is recorded, the app reads
    // the catalog, then the switch happens without telling it. s1 holds the row's current version; s0 keeps an old
    // copy (before the cleanup) or none (after it).
    private static async Task<Moved> SwitchedUnderTheAppAsync(string? movedTo, bool cleanedUp)
    {
        var shards = await ReshardingShards.CreateAsync(2);
        await shards.NewSource().Resharding.SeedAsync([Items]);
        await using (var catalog = await shards.OpenAsync(0))
        {
            await catalog.ExecuteAsync("insert into shardkit.move (id, buckets, source, target, state) values ('m-read', '{1}', 's0', 's1', 'CatchingUp')");
        }

        var app = await StaleAppAsync(shards);
        var moved = new Moved(shards, app, KeyIn(app.Map, 1), KeyIn(app.Map, 2), KeyIn(app.Map, shards.Buckets - 1), app.Map.Epoch);
        Assert.That(app.Map.ShardFor(moved.Moving), Is.EqualTo("s0"));
        await SwitchByHandAsync(shards, bucket: 1, from: 0, to: 1, notify: false, movedTo: movedTo);
        foreach (var (shard, id, payload) in new[] { (1, moved.Moving, "current"), (0, moved.Staying, "staying"), (1, moved.Other, "other") }
                     .Concat(cleanedUp ? [] : [(0, moved.Moving, "old copy")]))
        {
            await using var connection = await shards.OpenAsync(shard);
            await connection.ExecuteAsync("set shardkit.fence = off; insert into items (id, payload) values (@id, @payload)", new { id, payload });
        }

        return moved;
    }

    private const string ByKey = "select payload from items where id = @Id";

    public static IEnumerable<TestCaseData> Reads()
    {
        foreach (var kind in new[] { "QueryAsync", "Query", "QueryFirstOrDefaultAsync", "QuerySingle", "ExecuteScalarAsync", "ExecuteScalar",
                     "QueryUnbufferedAsync", "QueryMultipleAsync" })
        {
            foreach (var (movedTo, cleanedUp) in new[] { ("s1", false), ("s1", true), ((string?)null, false), (null, true) })
            {
                yield return new TestCaseData(kind, movedTo, cleanedUp).SetArgDisplayNames(kind, movedTo ?? "no word", cleanedUp ? "cleaned up" : "copy kept");
            }
        }
    }

    [TestCaseSource(nameof(Reads))]
    public async Task A_read_by_key_on_a_map_older_than_the_switch_reads_the_new_owner(string kind, string? movedTo, bool cleanedUp)
    {
        await using var f = await SwitchedUnderTheAppAsync(movedTo, cleanedUp);
        await using var db = f.App.CreateConnection();
        var key = new Item { Id = f.Moving };
        string? payload = kind switch
        {
            "QueryAsync" => (await db.QueryAsync<string>(ByKey, key)).SingleOrDefault(),
            "Query" => db.Query<string>(ByKey, key).SingleOrDefault(),
            "QueryFirstOrDefaultAsync" => await db.QueryFirstOrDefaultAsync<string>(ByKey, key),
            "QuerySingle" => db.QuerySingle<string>(ByKey, key),
            "ExecuteScalarAsync" => await db.ExecuteScalarAsync<string>(ByKey, key),
            "ExecuteScalar" => db.ExecuteScalar<string>(ByKey, key),
            "QueryUnbufferedAsync" => await Streamed(db.QueryUnbufferedAsync<string>(ByKey, key)),
            "QueryMultipleAsync" => await Grid(db, key),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };

        Assert.That(payload, Is.EqualTo("current"));
        if (movedTo is null)
        {
            Assert.That(f.App.Map.Epoch, Is.GreaterThan(f.EpochBefore), "with no word of the new owner the read waited for the catalog's map");
        }
        else
        {
            Assert.That(f.App.Map.Epoch, Is.EqualTo(f.EpochBefore), "the read went where the refusal said");
        }

        static async Task<string?> Streamed(IAsyncEnumerable<string> rows)
        {
            var list = new List<string>();
            await foreach (var row in rows)
            {
                list.Add(row);
            }

            return list.SingleOrDefault();
        }

        static async Task<string?> Grid(ShardedConnection db, Item key)
        {
            await using var grid = await db.QueryMultipleAsync(ByKey + "; select 1", key);
            var rows = (await grid.ReadAsync<string>()).ToList();
            Assert.That(await grid.ReadSingleAsync<int>(), Is.EqualTo(1));
            return rows.SingleOrDefault();
        }
    }

    // A key list over both shards: the old owner refuses its part; the whole read (it kept nothing) runs again by the new map.
    [TestCase(false)]
    [TestCase(true)]
    public async Task A_key_list_read_on_an_old_map_returns_every_row_once_from_its_owner(bool sync)
    {
        await using var f = await SwitchedUnderTheAppAsync("s1", cleanedUp: false);
        await using var db = f.App.CreateConnection();
        const string sql = "select id, payload from items where id = any(@Id) order by id";
        var keys = new { Id = new[] { f.Moving, f.Staying, f.Other } };
        var rows = sync ? db.Query<Item>(sql, keys).ToList() : (await db.QueryAsync<Item>(sql, keys)).ToList();

        Assert.That(rows.Select(r => (r.Id, r.Payload)),
            Is.EquivalentTo(new[] { (f.Moving, "current"), (f.Staying, "staying"), (f.Other, "other") }));
    }

    // Inside a transaction the refusal reaches the caller (as for writes): nothing stale is read.
    [Test]
    public async Task A_read_by_key_inside_a_transaction_on_an_old_map_is_refused()
    {
        await using var f = await SwitchedUnderTheAppAsync("s1", cleanedUp: false);
        await using var db = f.App.CreateConnection();
        await using var transaction = await db.BeginDistributedTransactionAsync();
        var error = Assert.ThrowsAsync<ShardBucketMovedException>(() => db.QueryFirstOrDefaultAsync<string>(ByKey, new Item { Id = f.Moving }));
        Assert.That((error!.Shard, error.MovedTo), Is.EqualTo(("s0", "s1")));
    }

    // A write through a procedure, split by a key list: the lexer does not take `call` for a write, and neither would it
    // `select app_add(…)`. The old owner refuses its part (its trigger finds the moving row's old copy); the other
    // shard's part committed already. Only the refused part runs again, by the newer map: every row is bumped once.
    [TestCase(false)]
    [TestCase(true)]
    public async Task A_split_procedure_write_refused_by_one_shard_is_applied_once_on_every_row(bool sync)
    {
        await using var f = await SwitchedUnderTheAppAsync("s1", cleanedUp: false);
        foreach (var shard in new[] { 0, 1 })
        {
            await using var connection = await f.Shards.OpenAsync(shard);
            await connection.ExecuteAsync("create procedure bump(ids bigint[]) language sql as $$ update items set n = n + 1 where id = any(ids) $$");
        }

        await using var db = f.App.CreateConnection();
        const string sql = "call bump(@Id)";
        var keys = new { Id = new[] { f.Moving, f.Staying, f.Other } };
        if (sync)
        {
            db.Execute(sql, keys);
        }
        else
        {
            await db.ExecuteAsync(sql, keys);
        }

        var rows = await f.Shards.AllRowsAsync();
        Assert.That(rows.Select(r => (r.Shard, r.Id, r.N)), Is.EquivalentTo(new[]
        {
            (1, f.Moving, 1), (0, f.Staying, 1), (1, f.Other, 1),
            (0, f.Moving, 0), // the old copy, refused and untouched (the move's cleanup deletes it)
        }), "each row bumped exactly once, on its owner");
    }

    // While a move is under way, a fan-out of dynamic rows read from a moved table alone keeps each shard's rows of the
    // buckets it owns by the read's map (the moving row's other copy is dropped), like typed rows. Rows of a table that
    // does not move with the buckets are all kept, even when its column has the moved table's key name; so are rows
    // read through a join (their table cannot be told).
    [Test]
    public async Task A_dynamic_fan_out_of_a_moved_table_returns_the_moving_row_once_and_keeps_other_tables_rows()
    {
        await using var f = await SwitchedUnderTheAppAsync("s1", cleanedUp: false);
        foreach (var shard in new[] { 0, 1 })
        {
            await using var connection = await f.Shards.OpenAsync(shard);
            await connection.ExecuteAsync("create table notes (id bigint, body text); insert into notes values (@id, @body)",
                new { id = f.Moving, body = $"note on s{shard}" });
        }

        await using var db = f.App.CreateConnection();
        var items = (await db.AllShards().QueryAsync("select id, payload from items")).Select(r => ((long)r.id, (string)r.payload)).ToList();
        Assert.That(items, Is.EquivalentTo(new[] { (f.Moving, "old copy"), (f.Staying, "staying"), (f.Other, "other") }),
            "the app's map still places the moving row on s0: its copy there comes once, s1's is dropped");

        var groups = (await db.AllShards().QueryAsync("select id, count(*) as copies from public.items group by id", merge: Merge.Concat<dynamic>()))
            .ToList();
        Assert.That(groups.Select(g => ((long)g.id, (long)g.copies)), Is.EquivalentTo(new[] { (f.Moving, 1L), (f.Staying, 1L), (f.Other, 1L) }));

        var notes = (await db.AllShards().QueryAsync("select id, body from notes")).Select(r => (string)r.body).ToList();
        Assert.That(notes, Is.EquivalentTo(new[] { "note on s0", "note on s1" }), "notes does not move: every row is kept");

        var joined = (await db.AllShards().QueryAsync("select i.id, n.body from items i join notes n on n.id = i.id")).ToList();
        Assert.That(joined, Has.Count.EqualTo(2), "a join's rows are not judged");
    }

    // Reads of buckets that do not move name nothing: they run on shards whose fence has no check_owned at all.
    [Test]
    public async Task A_read_of_a_bucket_that_does_not_move_sends_no_check()
    {
        await using var f = await SwitchedUnderTheAppAsync("s1", cleanedUp: false);
        await using (var old = await f.Shards.OpenAsync(0))
        {
            await old.ExecuteAsync("drop procedure shardkit.check_owned(text)");
        }

        await using var db = f.App.CreateConnection();
        Assert.That(await db.QueryFirstOrDefaultAsync<string>(ByKey, new Item { Id = f.Staying }), Is.EqualTo("staying"));
        Assert.That(MissingCheckNoticed(f), Is.False, "the read named nothing");
        await db.QueryFirstOrDefaultAsync<string>(ByKey, new Item { Id = f.Moving });
        Assert.That(MissingCheckNoticed(f), Is.True, "the moving bucket's read does name it (the procedure is gone, so the call failed once)");
    }

    private static bool MissingCheckNoticed(Moved f) => f.Shards.Logs.Logs.Any(l => l.EventId == 1705);

    // A fence seeded by an older ShardKit whose moves ran with an older mover has no check_owned: a read of a moving
    // bucket there runs unchecked (as every read did before), and the shard is read so for a while without failing
    // first. A move by this version installs it before the catalog lists the buckets as moving.
    [TestCase(false)]
    [TestCase(true)]
    public async Task A_fence_without_the_read_check_is_read_unchecked_instead_of_failing(bool split)
    {
        await using var f = await SwitchedUnderTheAppAsync("s1", cleanedUp: false);
        await using (var old = await f.Shards.OpenAsync(0))
        {
            await old.ExecuteAsync("drop procedure shardkit.check_owned(text)");
        }

        await using var db = f.App.CreateConnection();
        for (var round = 0; round < 2; round++)
        {
            if (split)
            {
                var rows = await db.QueryAsync<Item>("select id, payload from items where id = any(@Id)", new { Id = new[] { f.Moving, f.Other } });
                Assert.That(rows.Select(r => (r.Id, r.Payload)), Is.EquivalentTo(new[] { (f.Moving, "old copy"), (f.Other, "other") }));
            }
            else
            {
                Assert.That(await db.QueryFirstOrDefaultAsync<string>(ByKey, new Item { Id = f.Moving }), Is.EqualTo("old copy"),
                    "unchecked, the old map reads the old owner's copy, as before this version");
            }
        }

        Assert.That(f.Shards.Logs.Logs.Count(l => l.EventId == 1705), Is.EqualTo(1), "noticed once, then read unchecked without failing");
    }

    // Inside a transaction the failed check aborted the transaction, so the error reaches the caller; the shard is still
    // remembered, and the next transaction reads it unchecked instead of failing the same way.
    [Test]
    public async Task A_fence_without_the_read_check_fails_one_transaction_only()
    {
        await using var f = await SwitchedUnderTheAppAsync("s1", cleanedUp: false);
        await using (var old = await f.Shards.OpenAsync(0))
        {
            await old.ExecuteAsync("drop procedure shardkit.check_owned(text)");
        }

        await using var db = f.App.CreateConnection();
        await using (var first = await db.BeginDistributedTransactionAsync())
        {
            var error = Assert.CatchAsync(() => db.QueryFirstOrDefaultAsync<string>(ByKey, new Item { Id = f.Moving }));
            Assert.That(error!.ToString(), Does.Contain("shardkit.check_owned"));
        }

        Assert.That(MissingCheckNoticed(f), Is.True, "remembered although the transaction took the error");
        await using (var second = await db.BeginDistributedTransactionAsync())
        {
            Assert.That(await db.QueryFirstOrDefaultAsync<string>(ByKey, new Item { Id = f.Moving }), Is.EqualTo("old copy"));
            await second.CommitAsync();
        }
    }

    // A stream split over shards that already handed out the first shard's rows: the second shard's fence lacks the
    // check, which fails before that part's first row, so that part alone runs again unchecked (the rows handed out are
    // not read twice, and the caller sees no error).
    [Test]
    public async Task A_stream_whose_later_part_meets_a_fence_without_the_read_check_reruns_that_part_alone()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        await shards.NewSource().Resharding.SeedAsync([Items]);
        var last = shards.Buckets - 1; // on s1
        await using (var catalog = await shards.OpenAsync(0))
        {
            await catalog.ExecuteAsync("insert into shardkit.move (id, buckets, source, target, state) values ('m-s1', @buckets, 's1', 's0', 'CatchingUp')",
                new { buckets = new[] { last } });
        }

        var app = await StaleAppAsync(shards);
        var (first, second) = (KeyIn(app.Map, 2), KeyIn(app.Map, last));
        Assert.That((app.Map.ShardFor(first), app.Map.ShardFor(second)), Is.EqualTo(("s0", "s1")));
        foreach (var (shard, id, payload) in new[] { (0, first, "on s0"), (1, second, "on s1") })
        {
            await using var connection = await shards.OpenAsync(shard);
            await connection.ExecuteAsync("set shardkit.fence = off; insert into items (id, payload) values (@id, @payload)", new { id, payload });
        }

        await using (var s1 = await shards.OpenAsync(1))
        {
            await s1.ExecuteAsync("drop procedure shardkit.check_owned(text)");
        }

        await using var db = app.CreateConnection();
        var rows = new List<(long, string?)>();
        await foreach (var row in db.QueryUnbufferedAsync<Item>("select id, payload from items where id = any(@Id)", new { Id = new[] { first, second } }))
        {
            rows.Add((row.Id, row.Payload));
        }

        Assert.That(rows, Is.EqualTo(new[] { (first, (string?)"on s0"), (second, "on s1") }));
        Assert.That(shards.Logs.Logs.Count(l => l.EventId == 1705), Is.EqualTo(1));
    }
}

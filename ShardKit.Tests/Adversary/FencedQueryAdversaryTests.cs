using System.Collections;
using System.Data;
using Dapper;
using Npgsql;
using ShardKit.Tests.Resharding;

namespace ShardKit.Tests.Adversary;

/// <summary>
/// A demanding user's attacks on writes sent through <c>Query*</c>/<c>ExecuteScalar</c> on a data source that follows a
/// stored map (the fence statement in front of the write), written from the README and the public API. Each test asserts
/// what a user would expect; a failing test is a break.
/// </summary>
[TestFixture]
public sealed class FencedQueryAdversaryTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    public enum Color
    {
        Red = 0,
        Green = 1,
        Blue = 2,
    }

    /// <summary>A value type mapped by a registered Dapper type handler.</summary>
    public readonly record struct Counter(int Value);

    private sealed class CounterHandler : SqlMapper.TypeHandler<Counter>
    {
        public override void SetValue(IDbDataParameter parameter, Counter value) => parameter.Value = value.Value;

        public override Counter Parse(object value) => new(Convert.ToInt32(value, System.Globalization.CultureInfo.InvariantCulture));
    }

    public sealed record ItemRecord(long Id, string? Payload, int N);

    static FencedQueryAdversaryTests() => SqlMapper.AddTypeHandler(new CounterHandler());

    // ---------------------------------------------------------------- fixtures

    private static long KeyIn(ShardMap map, int bucket) => StoredMapTests.KeyIn(map, bucket);

    /// <summary>Shards seeded; an app on the old map; bucket 1 switched s0→s1 without telling it; Moving's row on s1 with n = 1.</summary>
    private sealed record OldMap(ReshardingShards Shards, ShardedDataSource App, long Moving, long Staying, long Other) : IAsyncDisposable
    {
        public ValueTask DisposeAsync() => Shards.DisposeAsync();

        public Task<int?> NOnAsync(int shard, long key) => Shards.ScalarAsync<int?>(shard, "select n from items where id = @key", new { key });

        public async Task<long> RowsOnAsync(int shard) => await Shards.ScalarAsync<long>(shard, "select count(*) from items");
    }

    private static async Task<OldMap> OldMapAsync(bool movedRow = true)
    {
        var shards = await ReshardingShards.CreateAsync(2);
        await shards.NewSource().Resharding.SeedAsync([Items]);
        var app = await StoredMapTests.StaleAppAsync(shards);
        var old = new OldMap(shards, app, KeyIn(app.Map, 1), KeyIn(app.Map, 2), KeyIn(app.Map, shards.Buckets - 1));
        await StoredMapTests.SwitchByHandAsync(shards, bucket: 1, from: 0, to: 1, notify: false);
        if (movedRow)
        {
            await using var owner = await shards.OpenAsync(1);
            await owner.ExecuteAsync("insert into items (id, payload, n) values (@key, 'moved', 1)", new { key = old.Moving });
        }

        Assert.That(app.Map.ShardFor(old.Moving), Is.EqualTo("s0"), "the app still routes by its old map");
        return old;
    }

    /// <summary>What a call gave: its value, or its exception's type and message (unwrapped from ShardKit's wrappers).</summary>
    private static string Outcome(Func<object?> call)
    {
        try
        {
            return "value " + Describe(call());
        }
        catch (Exception e)
        {
            var error = e is AggregateException { InnerException: { } inner } ? inner : e;
            return $"{error.GetType().FullName}: {error.Message}";
        }
    }

    private static string Describe(object? value) => value switch
    {
        null => "null",
        string s => $"String '{s}'",
        Item i => $"Item({i.Id}, {i.Payload}, {i.N})",
        IEnumerable e and not IDictionary<string, object> => "[" + string.Join(", ", e.Cast<object?>().Select(Describe)) + "]",
        _ => $"{value.GetType().Name} {value}",
    };

    // ---------------------------------------------------------------- the same answer as Dapper on the shard's own connection

    private const string Touch = "update items set payload = payload where id = @Id";

    /// <summary>
    /// Each case: one call through ShardKit (routed by Item.Id) and the same through Dapper on the owner's own connection.
    /// The write leaves the row as it was (payload = payload), so both see the same data.
    /// </summary>
    private static readonly Dictionary<string, (Func<ShardCommandTarget, Item, object?> Sharded, Func<IDbConnection, Item, object?> Plain)> Cases = new()
    {
        ["Query<int> of a bigint column"] = (
            (db, p) => db.Query<int>(Touch + " returning id", p).ToList(),
            (c, p) => c.Query<int>(Touch + " returning id", p).ToList()),
        ["QueryAsync<int> of a bigint column"] = (
            (db, p) => db.QueryAsync<int>(Touch + " returning id", p).GetAwaiter().GetResult().ToList(),
            (c, p) => c.QueryAsync<int>(Touch + " returning id", p).GetAwaiter().GetResult().ToList()),
        ["QuerySingle<int> of a bigint column"] = (
            (db, p) => db.QuerySingle<int>(Touch + " returning id", p),
            (c, p) => c.QuerySingle<int>(Touch + " returning id", p)),
        ["QuerySingleAsync<int> of a bigint column"] = (
            (db, p) => db.QuerySingleAsync<int>(Touch + " returning id", p).GetAwaiter().GetResult(),
            (c, p) => c.QuerySingleAsync<int>(Touch + " returning id", p).GetAwaiter().GetResult()),
        ["QueryFirst<string> of an int column"] = (
            (db, p) => db.QueryFirst<string>(Touch + " returning n", p),
            (c, p) => c.QueryFirst<string>(Touch + " returning n", p)),
        ["QuerySingle<long?> of an int column"] = (
            (db, p) => db.QuerySingle<long?>(Touch + " returning n", p),
            (c, p) => c.QuerySingle<long?>(Touch + " returning n", p)),
        ["QuerySingle<decimal> of an int column"] = (
            (db, p) => db.QuerySingle<decimal>(Touch + " returning n", p),
            (c, p) => c.QuerySingle<decimal>(Touch + " returning n", p)),
        ["QuerySingle<Color> of an int column"] = (
            (db, p) => db.QuerySingle<Color>(Touch + " returning n + 2", p),
            (c, p) => c.QuerySingle<Color>(Touch + " returning n + 2", p)),
        ["QuerySingle<Color> of a text column"] = (
            (db, p) => db.QuerySingle<Color>(Touch + " returning 'Blue'::text", p),
            (c, p) => c.QuerySingle<Color>(Touch + " returning 'Blue'::text", p)),
        ["QueryFirst<int> of NULL"] = (
            (db, p) => db.QueryFirst<int>(Touch + " returning null::int", p),
            (c, p) => c.QueryFirst<int>(Touch + " returning null::int", p)),
        ["QueryFirstOrDefault<int?> of NULL"] = (
            (db, p) => db.QueryFirstOrDefault<int?>(Touch + " returning null::int", p),
            (c, p) => c.QueryFirstOrDefault<int?>(Touch + " returning null::int", p)),
        ["QuerySingle<string> of NULL"] = (
            (db, p) => db.QuerySingle<string>(Touch + " returning null::text", p),
            (c, p) => c.QuerySingle<string>(Touch + " returning null::text", p)),
        ["QuerySingle<Counter> by a type handler"] = (
            (db, p) => db.QuerySingle<Counter>(Touch + " returning n + 5", p),
            (c, p) => c.QuerySingle<Counter>(Touch + " returning n + 5", p)),
        ["QuerySingle<Item> of returning *"] = (
            (db, p) => db.QuerySingle<Item>(Touch + " returning *", p),
            (c, p) => c.QuerySingle<Item>(Touch + " returning *", p)),
        ["QuerySingle<ItemRecord> by constructor"] = (
            (db, p) => db.QuerySingle<ItemRecord>(Touch + " returning id, payload, n", p),
            (c, p) => c.QuerySingle<ItemRecord>(Touch + " returning id, payload, n", p)),
        ["QuerySingle<ItemRecord> columns out of constructor order"] = (
            (db, p) => db.QuerySingle<ItemRecord>(Touch + " returning n, payload, id", p),
            (c, p) => c.QuerySingle<ItemRecord>(Touch + " returning n, payload, id", p)),
        ["QuerySingle<(long, int)> value tuple"] = (
            (db, p) => db.QuerySingle<(long, int)>(Touch + " returning id, n", p),
            (c, p) => c.QuerySingle<(long, int)>(Touch + " returning id, n", p)),
        ["Query dynamic"] = (
            (db, p) => db.Query(Touch + " returning id, payload, n", p).Select(r => (object)$"{r.id}/{r.payload}/{r.n}").ToList(),
            (c, p) => c.Query(Touch + " returning id, payload, n", p).Select(r => (object)$"{r.id}/{r.payload}/{r.n}").ToList()),
        ["QuerySingle with 0 rows"] = (
            (db, p) => db.QuerySingle<int>(Touch + " and false returning n", p),
            (c, p) => c.QuerySingle<int>(Touch + " and false returning n", p)),
        ["QueryFirst with 0 rows"] = (
            (db, p) => db.QueryFirst<int>(Touch + " and false returning n", p),
            (c, p) => c.QueryFirst<int>(Touch + " and false returning n", p)),
        ["QueryFirstOrDefault<int> with 0 rows"] = (
            (db, p) => db.QueryFirstOrDefault<int>(Touch + " and false returning n", p),
            (c, p) => c.QueryFirstOrDefault<int>(Touch + " and false returning n", p)),
        ["QuerySingle with 2 rows"] = (
            (db, p) => db.QuerySingle<int>($"with u as ({Touch} returning n) select n from u cross join generate_series(1, 2)", p),
            (c, p) => c.QuerySingle<int>($"with u as ({Touch} returning n) select n from u cross join generate_series(1, 2)", p)),
        ["QuerySingleOrDefault with 2 rows"] = (
            (db, p) => db.QuerySingleOrDefault<int>($"with u as ({Touch} returning n) select n from u cross join generate_series(1, 2)", p),
            (c, p) => c.QuerySingleOrDefault<int>($"with u as ({Touch} returning n) select n from u cross join generate_series(1, 2)", p)),
        ["Query of many rows"] = (
            (db, p) => db.Query<int>($"with u as ({Touch} returning n) select n + g from u cross join generate_series(1, 500) g", p).Sum(),
            (c, p) => c.Query<int>($"with u as ({Touch} returning n) select n + g from u cross join generate_series(1, 500) g", p).Sum()),
        ["Query of an update without returning"] = (
            (db, p) => db.Query<int>(Touch, p).ToList(),
            (c, p) => c.Query<int>(Touch, p).ToList()),
        ["QueryFirstOrDefault of an update without returning"] = (
            (db, p) => db.QueryFirstOrDefault<int?>(Touch, p),
            (c, p) => c.QueryFirstOrDefault<int?>(Touch, p)),
        ["ExecuteScalar<int> of a bigint column"] = (
            (db, p) => db.ExecuteScalar<int>(Touch + " returning id", p),
            (c, p) => c.ExecuteScalar<int>(Touch + " returning id", p)),
        ["ExecuteScalarAsync<int> of a bigint column"] = (
            (db, p) => db.ExecuteScalarAsync<int>(Touch + " returning id", p).GetAwaiter().GetResult(),
            (c, p) => c.ExecuteScalarAsync<int>(Touch + " returning id", p).GetAwaiter().GetResult()),
        ["ExecuteScalar<string> of an int column"] = (
            (db, p) => db.ExecuteScalar<string>(Touch + " returning n", p),
            (c, p) => c.ExecuteScalar<string>(Touch + " returning n", p)),
        ["ExecuteScalar<int> of unparsable text"] = (
            (db, p) => db.ExecuteScalar<int>(Touch + " returning 'abc'::text", p),
            (c, p) => c.ExecuteScalar<int>(Touch + " returning 'abc'::text", p)),
        ["ExecuteScalarAsync<int> of unparsable text"] = (
            (db, p) => db.ExecuteScalarAsync<int>(Touch + " returning 'abc'::text", p).GetAwaiter().GetResult(),
            (c, p) => c.ExecuteScalarAsync<int>(Touch + " returning 'abc'::text", p).GetAwaiter().GetResult()),
        ["ExecuteScalar<int> of numeric text"] = (
            (db, p) => db.ExecuteScalar<int>(Touch + " returning '42'::text", p),
            (c, p) => c.ExecuteScalar<int>(Touch + " returning '42'::text", p)),
        ["ExecuteScalar<Color> of an int column"] = (
            (db, p) => db.ExecuteScalar<Color>(Touch + " returning n + 1", p),
            (c, p) => c.ExecuteScalar<Color>(Touch + " returning n + 1", p)),
        ["ExecuteScalar<Color> of a numeric column"] = (
            (db, p) => db.ExecuteScalar<Color>(Touch + " returning 2.0::numeric", p),
            (c, p) => c.ExecuteScalar<Color>(Touch + " returning 2.0::numeric", p)),
        ["ExecuteScalar<Color?> of NULL"] = (
            (db, p) => db.ExecuteScalar<Color?>(Touch + " returning null::int", p),
            (c, p) => c.ExecuteScalar<Color?>(Touch + " returning null::int", p)),
        ["ExecuteScalar<int?> of NULL"] = (
            (db, p) => db.ExecuteScalar<int?>(Touch + " returning null::int", p),
            (c, p) => c.ExecuteScalar<int?>(Touch + " returning null::int", p)),
        ["ExecuteScalar<int> with no row"] = (
            (db, p) => db.ExecuteScalar<int>(Touch + " and false returning n", p),
            (c, p) => c.ExecuteScalar<int>(Touch + " and false returning n", p)),
        ["ExecuteScalar<Guid> of a uuid"] = (
            (db, p) => db.ExecuteScalar<Guid>(Touch + " returning '6f9619ff-8b86-d011-b42d-00c04fc964ff'::uuid", p),
            (c, p) => c.ExecuteScalar<Guid>(Touch + " returning '6f9619ff-8b86-d011-b42d-00c04fc964ff'::uuid", p)),
        ["ExecuteScalar<Guid> of text"] = (
            (db, p) => db.ExecuteScalar<Guid>(Touch + " returning '6f9619ff-8b86-d011-b42d-00c04fc964ff'::text", p),
            (c, p) => c.ExecuteScalar<Guid>(Touch + " returning '6f9619ff-8b86-d011-b42d-00c04fc964ff'::text", p)),
        ["ExecuteScalar<DateTime> of a timestamp"] = (
            (db, p) => db.ExecuteScalar<DateTime>(Touch + " returning timestamp '2020-01-02 03:04:05'", p).ToString("O"),
            (c, p) => c.ExecuteScalar<DateTime>(Touch + " returning timestamp '2020-01-02 03:04:05'", p).ToString("O")),
        ["ExecuteScalar<DateTimeOffset> of a timestamptz"] = (
            (db, p) => db.ExecuteScalar<DateTimeOffset>(Touch + " returning timestamptz '2020-01-02 03:04:05Z'", p),
            (c, p) => c.ExecuteScalar<DateTimeOffset>(Touch + " returning timestamptz '2020-01-02 03:04:05Z'", p)),
        ["ExecuteScalar<double> of numeric"] = (
            (db, p) => db.ExecuteScalar<double>(Touch + " returning 1.5::numeric", p),
            (c, p) => c.ExecuteScalar<double>(Touch + " returning 1.5::numeric", p)),
        ["ExecuteScalar<byte> overflow"] = (
            (db, p) => db.ExecuteScalar<byte>(Touch + " returning 300", p),
            (c, p) => c.ExecuteScalar<byte>(Touch + " returning 300", p)),
        ["ExecuteScalar<Counter> by a type handler"] = (
            (db, p) => db.ExecuteScalar<Counter>(Touch + " returning n + 5", p),
            (c, p) => c.ExecuteScalar<Counter>(Touch + " returning n + 5", p)),
        ["ExecuteScalar<object>"] = (
            (db, p) => db.ExecuteScalar<object>(Touch + " returning id", p),
            (c, p) => c.ExecuteScalar<object>(Touch + " returning id", p)),
        ["ExecuteScalar<dynamic>"] = (
            (db, p) => (object?)db.ExecuteScalar<dynamic>(Touch + " returning n", p),
            (c, p) => (object?)c.ExecuteScalar<dynamic>(Touch + " returning n", p)),
        ["ExecuteScalar<int[]> of an array"] = (
            (db, p) => db.ExecuteScalar<int[]>(Touch + " returning array[n, 2]", p),
            (c, p) => c.ExecuteScalar<int[]>(Touch + " returning array[n, 2]", p)),
        ["ExecuteScalar<bool> of an int column"] = (
            (db, p) => db.ExecuteScalar<bool>(Touch + " returning n + 1", p),
            (c, p) => c.ExecuteScalar<bool>(Touch + " returning n + 1", p)),
        ["ExecuteScalar of a write then a select"] = (
            (db, p) => db.ExecuteScalar<long>(Touch + "; select count(*) from items", p),
            (c, p) => c.ExecuteScalar<long>(Touch + "; select count(*) from items", p)),
        ["Query of a write then a failing statement"] = (
            (db, p) => db.Query<int>(Touch + " returning n; select 1/0", p).ToList(),
            (c, p) => c.Query<int>(Touch + " returning n; select 1/0", p).ToList()),
    };

    public static IEnumerable<string> CaseNames => Cases.Keys;

    private static async Task<(ReshardingShards Shards, ShardedDataSource Stored, ShardedDataSource Plain, long Key)> SeededAsync()
    {
        var shards = await ReshardingShards.CreateAsync(2);
        var stored = shards.NewSource();
        await stored.Resharding.SeedAsync([Items]);
        var plain = shards.NewSource(stored: false);
        var key = KeyIn(stored.Map, 2); // s0's by both maps
        Assert.That((stored.Map.ShardFor(key), plain.Map.ShardFor(key)), Is.EqualTo(("s0", "s0")));
        await using var s0 = await shards.OpenAsync(0);
        await s0.ExecuteAsync("insert into items (id, payload, n) values (@key, 'p', 0)", new { key });
        return (shards, stored, plain, key);
    }

    private (ReshardingShards Shards, ShardedDataSource Stored, ShardedDataSource Plain, long Key)? _seeded;
    private readonly SemaphoreSlim _seeding = new(1, 1);

    [OneTimeTearDown]
    public async Task DropSeededAsync()
    {
        if (_seeded is { } seeded)
        {
            await seeded.Shards.DisposeAsync();
        }
    }

    // One case at a time, so each break has its own name. Without a stored map nothing may differ (the control).
    [Test]
    public async Task A_write_through_Query_or_ExecuteScalar_answers_as_Dapper_does_on_the_shards_own_connection(
        [ValueSource(nameof(CaseNames))] string name, [Values(true, false)] bool storedMap)
    {
        await _seeding.WaitAsync();
        try
        {
            _seeded ??= await SeededAsync();
        }
        finally
        {
            _seeding.Release();
        }

        var (shards, stored, plain, key) = _seeded.Value;
        var source = storedMap ? stored : plain;
        await using var db = source.CreateConnection();
        await using var own = await shards.OpenAsync(0);
        var item = new Item { Id = key };
        var (sharded, plainCall) = Cases[name];

        var expected = Outcome(() => plainCall(own, item));
        var routed = Outcome(() => sharded(db, item));
        var scoped = Outcome(() => sharded(db.ForKey(key), item));

        Assert.That((routed, scoped), Is.EqualTo((expected, expected)), $"Dapper on the shard's connection: {expected}");
    }

    // ---------------------------------------------------------------- texts that write, on an old map

    // Each text changes Moving's row (on s1 with n = 1; the app's old map sends it to s0, which has no row). Named to the
    // fence, the old owner refuses it and it runs on s1: n = 2, and the caller gets 2.
    private static readonly Dictionary<string, string> WriteTexts = new()
    {
        ["block comment first"] = "/* bump */ update items set n = n + 1 where id = @Id returning n",
        ["nested block comment first"] = "/* a /* b */ still a comment */ update items set n = n + 1 where id = @Id returning n",
        ["line comment first"] = "-- bump\nupdate items set n = n + 1 where id = @Id returning n",
        ["mixed case"] = "UpDaTe items SET n = n + 1 WHERE id = @Id RETURNING n",
        ["leading whitespace and newlines"] = "\r\n\t  update items set n = n + 1 where id = @Id returning n",
        ["quoted table"] = "update \"items\" set n = n + 1 where id = @Id returning n",
        ["string with delete inside"] = "update items set n = n + 1, payload = 'delete; insert' where id = @Id returning n",
        ["with recursive"] = "with recursive r(x) as (select 1 union all select x + 1 from r where x < 1) update items set n = n + r.x from r where id = @Id returning n",
        ["with, write in a later cte"] = "with a as (select 1 as one), changed as (update items set n = n + 1 where id = @Id returning n) select n from changed",
        ["with after a comment"] = "-- c\nWITH changed AS (UPDATE items SET n = n + 1 WHERE id = @Id RETURNING n) SELECT n FROM changed",
        ["with, E-string before the write"] = "with a as (select E'it\\'s' as s), changed as (update items set n = n + 1 where id = @Id returning n) select n from changed",
        ["upsert"] = "insert into items (id, n) values (@Id, 100) on conflict (id) do update set n = items.n + 1 returning n",
        ["set local then update"] = "set local lock_timeout = '5s'; update items set n = n + 1 where id = @Id returning n",
        ["explain analyze update"] = "explain analyze update items set n = n + 1 where id = @Id",
    };

    public static IEnumerable<string> WriteTextNames => WriteTexts.Keys;

    [TestCaseSource(nameof(WriteTextNames))]
    public async Task A_write_text_through_Query_on_an_old_map_is_fenced_and_runs_on_the_new_owner(string name)
    {
        await using var f = await OldMapAsync();
        await using var db = f.App.CreateConnection();
        var sql = WriteTexts[name];

        var rows = name.StartsWith("explain", StringComparison.Ordinal)
            ? Outcome(() => db.Query<string>(sql, new Item { Id = f.Moving }).ToList())
            : Outcome(() => db.Query<int>(sql, new Item { Id = f.Moving }).ToList());

        var n = await f.NOnAsync(1, f.Moving);
        Assert.Multiple(() =>
        {
            Assert.That(n, Is.EqualTo(2), $"the write ran on the new owner once; the caller got {rows}");
            if (!name.StartsWith("explain", StringComparison.Ordinal))
            {
                Assert.That(rows, Is.EqualTo("value [Int32 2]"), "the caller gets the new owner's row");
            }

            Assert.That(f.App.Map.ShardFor(f.Moving), Is.EqualTo("s1"), "the refusal brought the new map");
        });
        Assert.That(await f.RowsOnAsync(0), Is.Zero, "nothing on the old owner");
    }

    [TestCase("scalar-sync")]
    [TestCase("scalar-async")]
    [TestCase("first-async")]
    [TestCase("single-sync")]
    [TestCase("singleordefault-async")]
    [TestCase("dynamic-params")]
    [TestCase("dictionary-params")]
    [TestCase("dynamic-rows")]
    [TestCase("commanddefinition-async")]
    public async Task An_insert_returning_on_an_old_map_inserts_once_on_the_new_owner(string kind)
    {
        await using var f = await OldMapAsync(movedRow: false);
        await using var db = f.App.CreateConnection();
        const string sql = "insert into items (id, payload, n) values (@Id, 'new', 5) returning id";
        var key = f.Moving;
        var dyn = new DynamicParameters();
        dyn.Add("Id", key);
        object? result = kind switch
        {
            "scalar-sync" => db.ExecuteScalar<long>(sql, new Item { Id = key }),
            "scalar-async" => await db.ExecuteScalarAsync<long>(sql, new Item { Id = key }),
            "first-async" => await db.QueryFirstAsync<long>(sql, new Item { Id = key }),
            "single-sync" => db.QuerySingle<long>(sql, new Item { Id = key }),
            "singleordefault-async" => await db.QuerySingleOrDefaultAsync<long?>(sql, new Item { Id = key }),
            "dynamic-params" => db.QuerySingle<long>(sql, dyn),
            "dictionary-params" => await db.QuerySingleAsync<long>(sql, new Dictionary<string, object> { ["Id"] = key }),
            "dynamic-rows" => (long)(await db.QueryAsync(sql, new Item { Id = key })).Single().id,
            "commanddefinition-async" => await db.QuerySingleAsync<long>(new CommandDefinition(sql, new Item { Id = key }, cancellationToken: CancellationToken.None)),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };

        Assert.That(result, Is.EqualTo(key));
        Assert.That(await f.RowsOnAsync(0), Is.Zero, "nothing on the old owner");
        Assert.That(await f.NOnAsync(1, key), Is.EqualTo(5), "inserted on the new owner");
        Assert.That(await f.RowsOnAsync(1), Is.EqualTo(1), "once");
    }

    [Test]
    public async Task An_insert_on_conflict_do_nothing_returning_no_row_on_an_old_map_gives_no_row_and_writes_nothing_on_the_old_owner()
    {
        await using var f = await OldMapAsync(); // the row is on s1 already
        await using var db = f.App.CreateConnection();
        const string sql = "insert into items (id, payload, n) values (@Id, 'dup', 9) on conflict (id) do nothing returning id";

        var id = await db.ExecuteScalarAsync<long?>(sql, new Item { Id = f.Moving });
        var rows = db.Query<long>(sql, new Item { Id = f.Moving }).ToList();

        Assert.That(id, Is.Null);
        Assert.That(rows, Is.Empty);
        Assert.That(await f.RowsOnAsync(0), Is.Zero, "no copy on the old owner");
        Assert.That(await f.NOnAsync(1, f.Moving), Is.EqualTo(1));
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task A_text_with_a_dollar_through_Query_on_an_old_map_still_has_its_rows_checked(bool insert)
    {
        // README: only the rows are checked for text with a `$`: an insert of the moving key is refused by the old owner's
        // row check and runs again on the new owner.
        await using var f = await OldMapAsync(movedRow: false);
        await using var db = f.App.CreateConnection();
        var sql = insert
            ? "insert into items (id, payload) values (@Id, $$dollar$$) returning id"
            : "insert into items (id, payload) values (@Id, 'x') returning (select $q$one$q$)";
        var result = await db.QuerySingleAsync<string>(sql, new Item { Id = f.Moving });
        Assert.That(result, Is.EqualTo(insert ? f.Moving.ToString(System.Globalization.CultureInfo.InvariantCulture) : "one"));
        Assert.That(await f.RowsOnAsync(0), Is.Zero);
        Assert.That(await f.RowsOnAsync(1), Is.EqualTo(1));
    }

    // ---------------------------------------------------------------- other Query* shapes (README: every routed write is named)

    [Test]
    public async Task QueryUnbufferedAsync_of_a_write_on_an_old_map_is_fenced_and_runs_on_the_new_owner()
    {
        await using var f = await OldMapAsync();
        await using var db = f.App.CreateConnection();
        var rows = new List<int>();
        await foreach (var n in db.QueryUnbufferedAsync<int>("update items set n = n + 1 where id = @Id returning n", new Item { Id = f.Moving }))
        {
            rows.Add(n);
        }

        Assert.That(await f.NOnAsync(1, f.Moving), Is.EqualTo(2), $"the write ran on the new owner; the caller got [{string.Join(",", rows)}]");
        Assert.That(rows, Is.EqualTo(new[] { 2 }));
    }

    [Test]
    public async Task A_multi_mapped_write_on_one_shard_on_an_old_map_is_fenced_and_runs_on_the_new_owner()
    {
        await using var f = await OldMapAsync();
        await using var db = f.App.CreateConnection();
        var rows = (await db.QueryAsync<Item, ItemRecord, (Item, ItemRecord)>(
            "update items set n = n + 1 where id = @Id returning id, payload, n, id, payload, n", (a, b) => (a, b),
            new Item { Id = f.Moving }, splitOn: "id")).ToList();

        Assert.That(await f.NOnAsync(1, f.Moving), Is.EqualTo(2), $"the write ran on the new owner; the caller got {rows.Count} rows");
        Assert.That(rows.Select(r => r.Item1.N), Is.EqualTo(new[] { 2 }));
    }

    [Test]
    public async Task QueryMultiple_with_a_write_on_an_old_map_is_fenced_and_runs_on_the_new_owner()
    {
        await using var f = await OldMapAsync();
        await using var db = f.App.CreateConnection();
        List<int> first;
        await using (var grid = await db.QueryMultipleAsync("update items set n = n + 1 where id = @Id returning n; select 1", new Item { Id = f.Moving }))
        {
            first = (await grid.ReadAsync<int>()).ToList();
            _ = await grid.ReadAsync<int>();
        }

        Assert.That(await f.NOnAsync(1, f.Moving), Is.EqualTo(2), $"the write ran on the new owner; the caller got [{string.Join(",", first)}]");
        Assert.That(first, Is.EqualTo(new[] { 2 }));
    }

    // ---------------------------------------------------------------- transactions

    [TestCase("query")]
    [TestCase("scalar")]
    [TestCase("single-sync")]
    public async Task Inside_a_shard_transaction_a_refused_Query_write_reaches_the_caller_and_nothing_is_written(string kind)
    {
        await using var f = await OldMapAsync(movedRow: false);
        await using var db = f.App.CreateConnection();
        await using var transaction = await db.ForKey(f.Moving).BeginTransactionAsync();
        const string sql = "insert into items (id, payload) values (@Id, 'tx') returning id";
        var item = new Item { Id = f.Moving };
        Exception? error = null;
        try
        {
            _ = kind switch
            {
                "query" => (await db.QueryAsync<long>(sql, item)).Count(),
                "scalar" => await db.ExecuteScalarAsync<long>(sql, item),
                _ => db.QuerySingle<long>(sql, item),
            };
        }
        catch (Exception e)
        {
            error = e;
        }

        Assert.That(error, Is.InstanceOf<ShardBucketMovedException>(), error?.ToString() ?? "no exception");
        await transaction.RollbackAsync();
        Assert.That((await f.Shards.AllRowsAsync()).Count, Is.Zero);
    }

    [Test]
    public async Task Inside_a_shard_transaction_a_fenced_write_then_a_read_of_it_see_the_same_transaction()
    {
        await using var f = await OldMapAsync(movedRow: false);
        await using var db = f.App.CreateConnection();
        await using (var transaction = await db.ForKey(f.Staying).BeginTransactionAsync())
        {
            var id = await db.QuerySingleAsync<long>("insert into items (id, payload) values (@Id, 'tx') returning id", new Item { Id = f.Staying });
            var seen = await db.QuerySingleAsync<string>("select payload from items where id = @Id", new Item { Id = f.Staying });
            Assert.That((id, seen), Is.EqualTo((f.Staying, "tx")));
            await transaction.RollbackAsync();
        }

        Assert.That((await f.Shards.AllRowsAsync()).Count, Is.Zero, "rolled back");
    }

    [Test]
    public async Task Inside_a_distributed_transaction_a_refused_Query_write_reaches_the_caller_and_nothing_is_written()
    {
        await using var f = await OldMapAsync(movedRow: false);
        await using var db = f.App.CreateConnection();
        Exception? error = null;
        await using (var transaction = await db.BeginDistributedTransactionAsync())
        {
            await db.ExecuteAsync("insert into items (id, payload) values (@Id, 'other')", new Item { Id = f.Other });
            try
            {
                await db.QuerySingleAsync<long>("insert into items (id, payload) values (@Id, 'tx') returning id", new Item { Id = f.Moving });
            }
            catch (Exception e)
            {
                error = e;
            }

            await transaction.RollbackAsync();
        }

        Assert.That(error, Is.Not.Null, "the refusal reached the caller");
        Assert.That(ShardBucketMovedException.IsMoved(error!) || error is ShardBucketMovedException, Is.True, error.ToString());
        Assert.That((await f.Shards.AllRowsAsync()).Count, Is.Zero);
    }

    // ---------------------------------------------------------------- cancellation

    [Test]
    public async Task A_cancelled_token_stops_a_fenced_Query_write_before_it_runs()
    {
        await using var f = await OldMapAsync();
        await using var db = f.App.CreateConnection();
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        var command = new CommandDefinition("update items set n = n + 1 where id = @Id returning n", new Item { Id = f.Staying },
            cancellationToken: cancelled.Token);

        Assert.That(async () => await db.QueryAsync<int>(command), Throws.InstanceOf<OperationCanceledException>());
        Assert.That(async () => await db.ExecuteScalarAsync<int>(command), Throws.InstanceOf<OperationCanceledException>());
        Assert.That(await f.NOnAsync(1, f.Moving), Is.EqualTo(1));
    }

    [Test]
    public async Task A_token_cancelled_while_a_fenced_Query_write_runs_cancels_it_and_it_is_not_applied()
    {
        await using var f = await OldMapAsync();
        await using var db = f.App.CreateConnection();
        await using (var s0 = await f.Shards.OpenAsync(0))
        {
            await s0.ExecuteAsync("insert into items (id, n) values (@staying, 0)", new { staying = f.Staying });
        }

        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        // The statement would run 20 s: ending well before says the cancel stopped it (a wide margin: these machines are
        // shared, and a cancel under load has taken 2.8 s).
        var command = new CommandDefinition("update items set n = n + 1 where id = @Id returning (select n from pg_sleep(20))",
            new Item { Id = f.Staying }, cancellationToken: cancel.Token);
        var started = DateTime.UtcNow;
        Assert.That(async () => await db.QueryAsync<int>(command), Throws.InstanceOf<OperationCanceledException>());
        Assert.That(DateTime.UtcNow - started, Is.LessThan(TimeSpan.FromSeconds(10)));
        Assert.That(await f.NOnAsync(0, f.Staying), Is.Zero, "cancelled: not applied");
    }

    // ---------------------------------------------------------------- output parameters

    [Test]
    public async Task An_output_parameter_of_a_write_through_ExecuteScalar_gets_what_it_gets_on_the_shards_own_connection()
    {
        var (shards, stored, _, key) = await SeededAsync();
        await using var _ = shards;
        await using var db = stored.CreateConnection();
        await using var own = await shards.OpenAsync(0);
        const string sql = "update items set n = n + 1 where id = @Id returning n";

        var mine = new DynamicParameters(new { Id = key });
        mine.Add("n", dbType: DbType.Int32, direction: ParameterDirection.Output);
        var plainScalar = await own.ExecuteScalarAsync<int>(sql, mine);
        var plainOut = Outcome(() => mine.Get<int?>("n"));

        var routed = new DynamicParameters(new { Id = key });
        routed.Add("n", dbType: DbType.Int32, direction: ParameterDirection.Output);
        var routedScalar = await db.ForKey(key).ExecuteScalarAsync<int>(sql, routed);
        var routedOut = Outcome(() => routed.Get<int?>("n"));

        Assert.That(routedScalar, Is.EqualTo(plainScalar + 1));
        Assert.That(routedOut, Is.EqualTo(plainOut.Replace($"{plainScalar}", $"{plainScalar + 1}", StringComparison.Ordinal)), $"plain: {plainOut}");
    }

    // ---------------------------------------------------------------- ForId

    // A table of its own, keyed by generated ids and not fenced (SeedAsync fenced only items): ForId writes through
    // Query/ExecuteScalar answer as Dapper does on the owner's connection, with a stored map and without.
    [TestCase(true)]
    [TestCase(false)]
    public async Task ForId_writes_through_Query_answer_as_Dapper_does_on_the_owners_connection(bool storedMap)
    {
        var (shards, stored, plain, _) = await SeededAsync();
        await using var __ = shards;
        for (var s = 0; s < 2; s++)
        {
            await using var conn = await shards.OpenAsync(s);
            await conn.ExecuteAsync("create table things (id bigint primary key, n int not null)");
        }

        var source = storedMap ? stored : plain;
        await using var generator = await ShardIdGenerator.CreateAsync(source);
        await using var db = source.CreateConnection();
        var differences = new List<string>();
        for (var i = 0; i < 8; i++)
        {
            var id = generator.NextId((long)i);
            var shard = source.ShardForId(id);
            Assert.That(db.ForId(id).Shard, Is.EqualTo(shard));
            await using var own = await shards.OpenAsync(shard == "s0" ? 0 : 1);
            var routed = Outcome(() => db.ForId(id).QuerySingle<int>("insert into things (id, n) values (@id, 7) returning id", new { id }));
            var again = Outcome(() => db.ForId(id).ExecuteScalar<short>("update things set n = n + 1 where id = @id returning n", new { id }));
            var rows = Outcome(() => db.ForId(id).Query<long>("delete from things where id = @id returning n", new { id }).ToList());
            var expected = Outcome(() => own.QuerySingle<int>("insert into things (id, n) values (@id, 7) returning id", new { id }));
            var expectedAgain = Outcome(() => own.ExecuteScalar<short>("update things set n = n + 1 where id = @id returning n", new { id }));
            var expectedRows = Outcome(() => own.Query<long>("delete from things where id = @id returning n", new { id }).ToList());
            if ((routed, again, rows) != (expected, expectedAgain, expectedRows))
            {
                differences.Add($"{id}: routed {routed} / {again} / {rows}; Dapper {expected} / {expectedAgain} / {expectedRows}");
            }
        }

        Assert.That(differences, Is.Empty, string.Join("\n", differences));
    }
}

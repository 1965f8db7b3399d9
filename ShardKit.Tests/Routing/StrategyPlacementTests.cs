using Npgsql;

namespace ShardKit.Tests.Routing;

/// <summary>Rows written through routing are found on exactly the shard each strategy names, checked on the servers.</summary>
public sealed class StrategyPlacementTests
{
    public sealed class LongRow
    {
        [ShardKey] public long K { get; init; }
    }

    public sealed class IntRow
    {
        [ShardKey] public int K { get; init; }
    }

    public sealed class ShortRow
    {
        [ShardKey] public short K { get; init; }
    }

    public sealed class TextRow
    {
        [ShardKey] public string K { get; init; } = "";
    }

    public sealed class GuidRow
    {
        [ShardKey] public Guid K { get; init; }
    }

    public sealed class DateRow
    {
        [ShardKey] public DateTime K { get; init; }
    }

    public sealed class OffsetRow
    {
        [ShardKey] public DateTimeOffset K { get; init; }
    }

    private static async Task<ShardTestContext> WriteAsync<TRow>(string columnType, IEnumerable<TRow> rows, Action<ShardedDataSourceBuilder>? configure = null)
    {
        var ctx = await ShardTestContext.CreateAsync($"create table {{0}} (k {columnType} not null)", configure);
        await using var db = ctx.Source.CreateConnection();
        var written = await db.ExecuteAsync($"insert into {ctx.Table} (k) values (@K)", rows.ToList());
        Assert.That(written, Is.GreaterThan(0));
        return ctx;
    }

    // The server recomputes each row's bucket with its own hash function; the owner of that bucket must be the shard.
    private static async Task AssertHashPlacementOnServersAsync(ShardTestContext ctx, string hashFunction, int expectedRows)
    {
        var buckets = ctx.Source.Map.Buckets!;
        var total = 0;
        for (var s = 0; s < ctx.Shards.Count; s++)
        {
            await using var conn = new NpgsqlConnection(ctx.Shards.ConnectionStrings[s]);
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand(
                $"select ((({hashFunction}(k)::bigint + 2147483648) * {buckets.Count}) >> 32)::int from {ctx.Table}", conn);
            await using var reader = await cmd.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                Assert.That(buckets.ShardOfBucket(reader.GetInt32(0)), Is.EqualTo(s), $"a row on {ctx.Shards.Names[s]} belongs to another shard");
                total++;
            }
        }

        Assert.That(total, Is.EqualTo(expectedRows));
    }

    private static async Task<Dictionary<string, List<T>>> RowsPerShardAsync<T>(ShardTestContext ctx)
    {
        var result = new Dictionary<string, List<T>>();
        foreach (var shard in ctx.Shards.Names)
        {
            result[shard] = await ctx.DirectAsync<T>(shard, $"select k from {ctx.Table}");
        }

        return result;
    }

    [Test]
    public async Task Hash_places_long_keys_where_the_server_hash_says()
    {
        var random = new Random(1);
        await using var ctx = await WriteAsync("bigint", Enumerable.Range(0, 500).Select(_ => new LongRow { K = random.NextInt64(long.MinValue, long.MaxValue) }));
        await AssertHashPlacementOnServersAsync(ctx, "hashint8", 500);
    }

    [Test]
    public async Task Hash_places_int_and_short_keys_like_equal_long_keys()
    {
        await using var ctx = await WriteAsync("int", Enumerable.Range(-250, 500).Select(i => new IntRow { K = i * 7919 }));
        await AssertHashPlacementOnServersAsync(ctx, "hashint4", 500);
        await using var shorts = await WriteAsync("smallint", Enumerable.Range(-250, 500).Select(i => new ShortRow { K = (short)(i * 61) }));
        await AssertHashPlacementOnServersAsync(shorts, "hashint2", 500);
        Assert.That(ctx.Source.ShardFor(12345), Is.EqualTo(ctx.Source.ShardFor(12345L)));
    }

    [Test]
    public async Task Hash_places_string_keys_where_the_server_hashtext_says()
    {
        await using var ctx = await WriteAsync("text", Enumerable.Range(0, 500).Select(i => new TextRow { K = $"tenant-{i}-zürich-東京" }));
        await AssertHashPlacementOnServersAsync(ctx, "hashtext", 500);
    }

    [Test]
    public async Task Hash_places_guid_keys_where_the_server_uuid_hash_says()
    {
        await using var ctx = await WriteAsync("uuid", Enumerable.Range(0, 500).Select(_ => new GuidRow { K = Guid.NewGuid() }));
        await AssertHashPlacementOnServersAsync(ctx, "uuid_hash", 500);
    }

    [Test]
    public async Task Modulo_places_each_key_on_shard_key_mod_n()
    {
        await using var ctx = await WriteAsync("bigint", Enumerable.Range(-100, 400).Select(i => new LongRow { K = i }), b => b.UseModuloSharding());
        var perShard = await RowsPerShardAsync<long>(ctx);
        var n = ctx.Shards.Count;
        for (var s = 0; s < n; s++)
        {
            Assert.That(perShard[ctx.Shards.Names[s]], Has.All.Matches<long>(k => ((k % n) + n) % n == s));
        }

        Assert.That(perShard.Values.Sum(v => v.Count), Is.EqualTo(400));
    }

    [Test]
    public async Task Modulo_placement_is_what_the_documented_sql_computes_for_negative_and_extreme_keys()
    {
        long[] keys = [long.MinValue, long.MinValue + 1, int.MinValue, -100_003, -7, -5, -4, -3, -1, 0, 1, 3, 4, 7, int.MaxValue, long.MaxValue - 1, long.MaxValue];
        await using var ctx = await WriteAsync("bigint", keys.Select(k => new LongRow { K = k }), b => b.UseModuloSharding());
        var n = ctx.Shards.Count;
        var found = new List<long>();
        for (var s = 0; s < n; s++)
        {
            var name = ctx.Shards.Names[s];
            var rows = await ctx.DirectAsync<(long Key, int Shard)>(name, $"select k, (((k % {n}) + {n}) % {n})::int from {ctx.Table}");
            foreach (var (key, shard) in rows)
            {
                Assert.That(shard, Is.EqualTo(s), $"the SQL places key {key} on shard {shard}, ShardKit put it on {name}");
                Assert.That(ctx.Source.ShardFor(key), Is.EqualTo(name), $"key {key}");
                found.Add(key);
            }
        }

        Assert.That(found, Is.EquivalentTo(keys));

        // Plain SQL k % n keeps the key's sign, which is why the README shows the longer expression.
        var plain = await ctx.DirectAsync<long>(ctx.Shards.Names[0], $"select (-7)::bigint % {n}");
        Assert.That(plain[0], Is.Negative);
    }

    [Test]
    public async Task Range_places_date_keys_in_their_half_open_range()
    {
        var bounds = Enumerable.Range(0, 5).Select(i => new DateTime(2026, 1 + i * 2, 1, 0, 0, 0, DateTimeKind.Utc)).ToArray();
        await using var ctx = await WriteAsync("timestamp",
            Enumerable.Range(0, 300).Select(i => new DateRow { K = bounds[0].AddDays(i) }),
            b => b.UseRangeSharding(Enumerable.Range(0, 4).Select(i => new ShardRange(i == 0 ? null : bounds[i], i == 3 ? null : bounds[i + 1], $"s{i}"))));
        var perShard = await RowsPerShardAsync<DateTime>(ctx);
        Assert.That(perShard["s0"], Has.All.LessThan(bounds[1]));
        Assert.That(perShard["s1"], Has.All.GreaterThanOrEqualTo(bounds[1]).And.All.LessThan(bounds[2]));
        Assert.That(perShard["s2"], Has.All.GreaterThanOrEqualTo(bounds[2]).And.All.LessThan(bounds[3]));
        Assert.That(perShard["s3"], Has.All.GreaterThanOrEqualTo(bounds[3]));
        Assert.That(perShard.Values.Sum(v => v.Count), Is.EqualTo(300));
    }

    [Test]
    public async Task Range_places_offset_keys_by_their_utc_instant()
    {
        var split = new DateTimeOffset(2026, 6, 1, 0, 0, 0, TimeSpan.Zero);
        await using var ctx = await WriteAsync("timestamptz",
            new[] { new OffsetRow { K = split.AddMinutes(-1) }, new OffsetRow { K = split }, new OffsetRow { K = split.AddDays(3) } },
            b => b.UseRangeSharding(new ShardRange(null, split, "s0"), new ShardRange(split, null, "s1")));
        var perShard = await RowsPerShardAsync<DateTime>(ctx);
        Assert.That(perShard["s0"], Has.Count.EqualTo(1));
        Assert.That(perShard["s1"], Has.Count.EqualTo(2));
        // 01:30+02:00 is 23:30 UTC the day before the split (Npgsql writes only UTC offsets, so this one is checked in memory).
        Assert.That(ctx.Source.ShardFor(new DateTimeOffset(2026, 6, 1, 1, 30, 0, TimeSpan.FromHours(2))), Is.EqualTo("s0"));
    }

    [Test]
    public async Task List_places_each_tenant_on_its_listed_shard_and_others_on_the_default()
    {
        var list = new Dictionary<ShardKeyValue, string> { ["acme"] = "s1", ["globex"] = "s2", ["initech"] = "s1" };
        await using var ctx = await WriteAsync("text", new[] { "acme", "globex", "initech", "umbrella", "hooli" }.Select(k => new TextRow { K = k }),
            b => b.UseListSharding(list, defaultShard: "s3"));
        var perShard = await RowsPerShardAsync<string>(ctx);
        Assert.That(perShard["s1"], Is.EquivalentTo(new[] { "acme", "initech" }));
        Assert.That(perShard["s2"], Is.EquivalentTo(new[] { "globex" }));
        Assert.That(perShard["s3"], Is.EquivalentTo(new[] { "umbrella", "hooli" }));
        Assert.That(perShard["s0"], Is.Empty);
    }

    [Test]
    public async Task Custom_places_each_key_where_the_delegate_says()
    {
        await using var ctx = await WriteAsync("uuid", Enumerable.Range(0, 200).Select(_ => new GuidRow { K = Guid.NewGuid() }),
            b => b.UseCustomSharding(k => "s" + (k.Guid.ToByteArray()[0] % 4)));
        var perShard = await RowsPerShardAsync<Guid>(ctx);
        for (var s = 0; s < 4; s++)
        {
            Assert.That(perShard[$"s{s}"], Has.All.Matches<Guid>(g => g.ToByteArray()[0] % 4 == s));
        }

        Assert.That(perShard.Values.Sum(v => v.Count), Is.EqualTo(200));
    }
}

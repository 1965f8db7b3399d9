using Dapper;
using Npgsql;

namespace ShardKit.Tests.Merging;

/// <summary>
/// Every key type an ordered merge accepts orders as PostgreSQL orders it: each merge is compared with the same
/// ORDER BY on one server holding all the rows, over the whole table and over a short page (few rows per shard, where
/// a wrong comparison is silent rather than caught by the order check).
/// </summary>
public sealed class KeyOrderTests
{
    private const string Ddl = "create table {0} (customer_id bigint not null, id bigint primary key, name text not null, " +
                               "score float8 not null, ratio float4 not null, uid uuid not null, data bytea not null, " +
                               "flag bool not null, amount numeric(12,2))";

    private static readonly string[] Pieces = ["a", "z", "é", "中", "\uE000", "\uFFFD", "\uFF21", "😀", "𝄞", "\U0010FFFF"];
    private static readonly double[] Specials = [double.NaN, double.PositiveInfinity, double.NegativeInfinity, 0d, -1.5, 1e300];

    private ShardTestContext _context = null!;

    public sealed record Row
    {
        [ShardKey] public long CustomerId { get; init; }

        public long Id { get; init; }

        public string Name { get; init; } = "";

        public double Score { get; init; }

        public float Ratio { get; init; }

        public Guid Uid { get; init; }

        public byte[] Data { get; init; } = [];

        public bool Flag { get; init; }

        public decimal? Amount { get; init; }
    }

    private string Reference => _context.Table + "_all";

    [OneTimeSetUp]
    public async Task LoadAsync()
    {
        _context = await ShardTestContext.CreateAsync(Ddl, stem: "keys");
        var random = new Random(20260412);
        var rows = Enumerable.Range(1, 400).Select(i => new Row
        {
            CustomerId = random.Next(1, 1000),
            Id = i,
            Name = string.Concat(Enumerable.Range(0, random.Next(1, 4)).Select(_ => Pieces[random.Next(Pieces.Length)])),
            Score = random.Next(4) == 0 ? Specials[random.Next(Specials.Length)] : random.NextDouble() * 100,
            Ratio = random.Next(4) == 0 ? (float)Specials[random.Next(3)] : (float)random.NextDouble(),
            Uid = Guid.NewGuid(),
            Data = Enumerable.Range(0, random.Next(0, 4)).Select(_ => (byte)(random.Next(0, 3) switch { 0 => 0, 1 => 0x7F, _ => 0xFF })).ToArray(),
            Flag = random.Next(2) == 0,
            Amount = random.Next(5) == 0 ? null : random.Next(-1000, 1000) / 10m,
        }).ToList();

        const string insert = "insert into {0} values (@CustomerId, @Id, @Name, @Score, @Ratio, @Uid, @Data, @Flag, @Amount)";
        await using (var db = _context.Source.CreateConnection())
        {
            await db.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, insert, _context.Table), rows);
        }

        await using var single = await OpenSingleAsync();
        await single.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, Ddl, Reference));
        await single.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, insert, Reference), rows);
    }

    [OneTimeTearDown]
    public async Task DropAsync()
    {
        await using (var single = await OpenSingleAsync())
        {
            await single.ExecuteAsync($"drop table if exists {Reference}");
        }

        await _context.DisposeAsync();
    }

    [Test]
    public Task Text_merges_by_code_point_as_collate_C_orders_UTF_8() =>
        AssertSameOrderAsync("name collate \"C\", id", Merge.OrderBy<Row, string>(r => r.Name).ThenBy(r => r.Id));

    [Test]
    public Task Text_merges_by_code_point_descending() =>
        AssertSameOrderAsync("name collate \"C\" desc, id desc", Merge.OrderByDescending<Row, string>(r => r.Name).ThenByDescending(r => r.Id));

    [Test]
    public Task Double_NaN_sorts_above_infinity_as_in_PostgreSQL() =>
        AssertSameOrderAsync("score, id", Merge.OrderBy<Row, double>(r => r.Score).ThenBy(r => r.Id));

    [Test]
    public Task Double_NaN_sorts_first_descending() =>
        AssertSameOrderAsync("score desc, id", Merge.OrderByDescending<Row, double>(r => r.Score).ThenBy(r => r.Id));

    [Test]
    public Task Nullable_double_keys_order_NaN_and_values_as_in_PostgreSQL() =>
        AssertSameOrderAsync("score, id", Merge.OrderBy<Row, double?>(r => r.Score).ThenBy(r => r.Id));

    [Test]
    public Task Float_NaN_sorts_above_infinity_as_in_PostgreSQL() =>
        AssertSameOrderAsync("ratio, id", Merge.OrderBy<Row, float>(r => r.Ratio).ThenBy(r => r.Id));

    [Test]
    public Task Uuid_merges_in_PostgreSQL_byte_order() =>
        AssertSameOrderAsync("uid", Merge.OrderBy<Row, Guid>(r => r.Uid));

    [Test]
    public Task Bytea_merges_byte_by_byte_with_prefixes_first() =>
        AssertSameOrderAsync("data, id", Merge.OrderBy<Row, byte[]>(r => r.Data).ThenBy(r => r.Id));

    [Test]
    public Task Bool_merges_false_first() =>
        AssertSameOrderAsync("flag desc, id", Merge.OrderByDescending<Row, bool>(r => r.Flag).ThenBy(r => r.Id));

    [Test]
    public Task Nullable_numeric_merges_with_nulls_last_ascending_and_first_descending()
    {
        return Task.WhenAll(
            AssertSameOrderAsync("amount, id", Merge.OrderBy<Row, decimal?>(r => r.Amount).ThenBy(r => r.Id)),
            AssertSameOrderAsync("amount desc, id", Merge.OrderByDescending<Row, decimal?>(r => r.Amount).ThenBy(r => r.Id)));
    }

    [Test]
    public Task Nulls_first_and_nulls_last_merge_as_the_query_asks()
    {
        return Task.WhenAll(
            AssertSameOrderAsync("amount nulls first, id", Merge.OrderBy<Row, decimal?>(r => r.Amount, nullsFirst: true).ThenBy(r => r.Id)),
            AssertSameOrderAsync("amount desc nulls last, id", Merge.OrderByDescending<Row, decimal?>(r => r.Amount, nullsFirst: false).ThenBy(r => r.Id)),
            AssertSameOrderAsync("flag, amount desc nulls last, id",
                Merge.OrderBy<Row, bool>(r => r.Flag).ThenByDescending(r => r.Amount, nullsFirst: false).ThenBy(r => r.Id)));
    }

    [Test]
    public async Task Min_and_max_of_text_and_double_equal_the_single_database()
    {
        await using var db = _context.Source.CreateConnection();
        var all = db.AllShards();
        Assert.That(await all.ExecuteScalarAsync($"select max(name collate \"C\") from {_context.Table}", Merge.Max<string>()),
            Is.EqualTo(await SingleScalarAsync<string>("select max(name collate \"C\") from {0}")));
        Assert.That(await all.ExecuteScalarAsync($"select min(name collate \"C\") from {_context.Table}", Merge.Min<string>()),
            Is.EqualTo(await SingleScalarAsync<string>("select min(name collate \"C\") from {0}")));
        Assert.That(await all.ExecuteScalarAsync($"select max(score) from {_context.Table}", Merge.Max<double>()),
            Is.EqualTo(await SingleScalarAsync<double>("select max(score) from {0}")));
    }

    private async Task AssertSameOrderAsync(string orderBy, MergePlan<Row> plan)
    {
        await using var db = _context.Source.CreateConnection();
        var all = await db.AllShards().QueryAsync($"select * from {_context.Table} order by {orderBy}", null, plan);
        var page = plan.Take(15);
        var paged = await db.AllShards().QueryAsync($"select * from {_context.Table} order by {orderBy} limit @ShardLimit", new { page.ShardLimit }, page);

        var expected = await SingleIdsAsync($"select id from {{0}} order by {orderBy}");
        Assert.That(all.Select(r => r.Id), Is.EqualTo(expected), "every row");
        Assert.That(paged.Select(r => r.Id), Is.EqualTo(expected.Take(15)), "a page of 15");
    }

    private async Task<List<long>> SingleIdsAsync(string sql)
    {
        await using var single = await OpenSingleAsync();
        return (await single.QueryAsync<long>(string.Format(System.Globalization.CultureInfo.InvariantCulture, sql, Reference))).ToList();
    }

    private async Task<T> SingleScalarAsync<T>(string sql)
    {
        await using var single = await OpenSingleAsync();
        return (await single.ExecuteScalarAsync<T>(string.Format(System.Globalization.CultureInfo.InvariantCulture, sql, Reference)))!;
    }

    private async Task<NpgsqlConnection> OpenSingleAsync()
    {
        var single = new NpgsqlConnection(_context.Shards.ConnectionStrings[0]);
        await single.OpenAsync();
        return single;
    }
}

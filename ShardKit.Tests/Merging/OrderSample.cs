using Dapper;
using Npgsql;

namespace ShardKit.Tests.Merging;

/// <summary>
/// Orders spread over the real shards, and the very same rows in one reference table on a single server: every merge
/// is checked against what one database answers for the same SQL.
/// </summary>
internal sealed class OrderSample : IAsyncDisposable
{
    public const string Ddl = "create table {0} (customer_id bigint not null, id bigint primary key, total numeric(12,2) not null, " +
                              "created_at timestamptz not null, status text not null, region text)";

    private OrderSample(ShardTestContext context, List<Order> orders)
    {
        Context = context;
        Orders = orders;
    }

    public sealed record Order
    {
        [ShardKey] public long CustomerId { get; init; }

        public long Id { get; init; }

        public decimal Total { get; init; }

        public DateTime CreatedAt { get; init; }

        public string Status { get; init; } = "";

        public string? Region { get; init; }
    }

    public ShardTestContext Context { get; }

    public List<Order> Orders { get; }

    public string Table => Context.Table;

    /// <summary>The single-server table holding every row.</summary>
    public string Reference => Context.Table + "_all";

    public static async Task<OrderSample> CreateAsync(int count, int seed)
    {
        var context = await ShardTestContext.CreateAsync(Ddl, stem: "orders");
        var random = new Random(seed);
        var start = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        string[] statuses = ["new", "paid", "shipped", "void"];
        string?[] regions = ["eu", "us", "apac", null];
        var orders = Enumerable.Range(1, count).Select(i => new Order
        {
            CustomerId = random.Next(1, 400),
            Id = i,
            Total = random.Next(100, 100_000) / 100m,
            CreatedAt = start.AddMinutes(random.Next(0, count / 4)), // many equal timestamps: ties must break by id
            Status = statuses[random.Next(statuses.Length)],
            Region = regions[random.Next(regions.Length)],
        }).ToList();

        const string insert = "insert into {0} (customer_id, id, total, created_at, status, region) values (@CustomerId, @Id, @Total, @CreatedAt, @Status, @Region)";
        await using (var db = context.Source.CreateConnection())
        {
            await db.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, insert, context.Table), orders);
        }

        await using var single = new NpgsqlConnection(context.Shards.ConnectionStrings[0]);
        await single.OpenAsync();
        await single.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, Ddl, context.Table + "_all"));
        await single.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, insert, context.Table + "_all"), orders);
        return new OrderSample(context, orders);
    }

    /// <summary>The same query on the single reference table; {0} in the SQL is the table.</summary>
    public async Task<List<T>> SingleAsync<T>(string sql, object? param = null)
    {
        await using var single = new NpgsqlConnection(Context.Shards.ConnectionStrings[0]);
        await single.OpenAsync();
        return (await single.QueryAsync<T>(string.Format(System.Globalization.CultureInfo.InvariantCulture, sql, Reference), param)).ToList();
    }

    public string Sql(string sql) => string.Format(System.Globalization.CultureInfo.InvariantCulture, sql, Table);

    public async ValueTask DisposeAsync()
    {
        await using (var single = new NpgsqlConnection(Context.Shards.ConnectionStrings[0]))
        {
            await single.OpenAsync();
            await single.ExecuteAsync($"drop table if exists {Reference}");
        }

        await Context.DisposeAsync();
    }
}

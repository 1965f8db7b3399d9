using System.Diagnostics;
using Dapper;
using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Benchmarks;

/// <summary>
/// The short end-to-end tour (no arguments): starts local shards with the test harness, loads sample data, shows
/// routing, merged fan-out, a distributed transaction and a bulk load, then measures the headline ratios briefly.
/// The full, careful measurements are the BenchmarkDotNet suites (run with arguments).
/// </summary>
public static partial class Tour
{
    private static readonly Stopwatch Clock = Stopwatch.StartNew();

    public static async Task<int> RunAsync()
    {
        DefaultTypeMap.MatchNamesWithUnderscores = true;
        try
        {
            var set = await Step("Starting 4 local PostgreSQL shards", TestShards.GetAsync);
            Console.WriteLine($"    {set.Count} shards from {set.Source}");
            await using var shards = await BenchmarkShards.StartAsync();
            var source = shards.Source;
            await MigrateAsync(shards);

            var orders = SampleOrders(20_000);
            await using (var db = source.CreateConnection())
            {
                var loaded = await Step("Loading 20,000 orders", () => LoadAsync(db, orders));
                Console.WriteLine($"    {loaded}");
                await ShowRoutingAsync(db);
                await ShowFanOutAsync(db);
                await ShowIdsAsync(source, db);
                await ShowDistributedTransactionAsync(source, db);
                await ShowBulkLoadAsync(db);
            }

            await ShowLiveMoveAsync();

            var ratios = await MeasureRatiosAsync(shards, set);
            PrintRatios(ratios);
            await shards.OnEveryShardAsync("drop table if exists tour_orders, tour_migrations");
            return 0;
        }
        finally
        {
            await TestShards.ShutdownAsync();
            Console.WriteLine($"Done in {Clock.Elapsed.TotalSeconds:0.0} s; shards stopped and removed.");
        }
    }

    // The schema comes from versioned scripts, as an app would ship it: every shard records them in tour_migrations.
    private static async Task MigrateAsync(BenchmarkShards shards)
    {
        await shards.OnEveryShardAsync("drop table if exists tour_orders, tour_migrations"); // a tour that stopped early left them
        Migration[] migrations =
        [
            new(1, "create_orders",
                "create table tour_orders (customer_id bigint not null, id bigint not null, total numeric not null, created_at timestamptz not null, primary key (customer_id, id))"),
            new(2, "orders_by_total", "create index concurrently if not exists tour_orders_total on tour_orders (total)") { IsTransactional = false },
        ];
        var options = new MigrationOptions { HistoryTable = "tour_migrations" };
        var result = await Step("Migrating the schema: 2 scripts, canary shard first, then the rest in parallel",
            () => shards.Source.MigrateAsync(migrations, options));
        var status = await shards.Source.GetMigrationStatusAsync(migrations, options);
        Console.WriteLine($"    {result.AppliedCount} script runs (canary {result.CanaryShard}); every shard at version {status.LatestVersion}, " +
                          $"{(status.IsUpToDate ? "no drift" : "DRIFT")}");
    }

    private static async Task<T> Step<T>(string title, Func<Task<T>> work)
    {
        Console.Write($"[{Clock.Elapsed.TotalSeconds,5:0.0}s] {title} … ");
        var started = Stopwatch.GetTimestamp();
        var result = await work();
        Console.WriteLine($"done ({Stopwatch.GetElapsedTime(started).TotalMilliseconds:0} ms)");
        return result;
    }

    private static List<BenchOrder> SampleOrders(int count)
    {
        var random = new Random(7);
        var start = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        return Enumerable.Range(1, count).Select(i => new BenchOrder
        {
            CustomerId = random.Next(1, 2_000),
            Id = i,
            Total = Math.Round((decimal)(random.NextDouble() * 500), 2),
            CreatedAt = start.AddMinutes(i * 7 % 400_000),
        }).ToList();
    }

    private static async Task<string> LoadAsync(ShardedConnection db, List<BenchOrder> orders)
    {
        var written = await db.ExecuteAsync("insert into tour_orders values (@CustomerId, @Id, @Total, @CreatedAt)", orders);
        var perShard = await db.AllShards().ExecuteAsync("analyze tour_orders");
        return $"{written} rows written, grouped per shard and sent to the {perShard.AffectedRows.Count} shards in parallel";
    }

    private static async Task ShowRoutingAsync(ShardedConnection db)
    {
        var mine = await Step("Routed query: orders of customer 42", async () =>
            (await db.QueryAsync<BenchOrder>("select * from tour_orders where customer_id = @CustomerId", new { CustomerId = 42L })).ToList());
        Console.WriteLine($"    {mine.Count} orders, all read from shard {db.DataSource.ShardFor(42L)} only");
        var some = await db.QueryAsync<BenchOrder>("select * from tour_orders where customer_id = any(@CustomerId)", new { CustomerId = new[] { 1L, 2L, 3L, 42L } });
        Console.WriteLine($"    customers 1, 2, 3, 42: {some.Count()} orders; the key array was split so each shard got only its own keys");
        try
        {
            await db.ExecuteAsync("delete from tour_orders");
        }
        catch (ShardRoutingException e)
        {
            Console.WriteLine($"    a delete with no key is refused: {e.Message[..Math.Min(e.Message.Length, 110)]}…");
        }
    }
}

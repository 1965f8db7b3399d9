
namespace ShardKit.Benchmarks;

public static partial class Tour
{
    private static readonly MergePlan<BenchOrder> NewestFirst =
        Merge.OrderByDescending<BenchOrder, DateTime>(o => o.CreatedAt).ThenByDescending(o => o.Id);

    private sealed record DayTotal(DateTime Day, long Orders, decimal Total);

    private static async Task ShowFanOutAsync(ShardedConnection db)
    {
        var plan = NewestFirst.Take(5);
        var newest = await Step("Fan-out: the 5 newest orders across every shard", async () =>
            await db.AllShards().QueryWithShardAsync("select * from tour_orders order by created_at desc, id desc limit @ShardLimit",
                new { plan.ShardLimit }, plan));
        foreach (var row in newest)
        {
            Console.WriteLine($"    {row.Row.CreatedAt:yyyy-MM-dd HH:mm}  order {row.Row.Id,6}  {row.Row.Total,8:0.00}  from {row.Shard}");
        }

        var all = db.AllShards();
        var count = await all.ExecuteScalarAsync("select count(*) from tour_orders", Merge.Count());
        var average = await all.ExecuteScalarAsync("select sum(total), count(total) from tour_orders", Merge.Average());
        Console.WriteLine($"    count {count} (sum of per-shard counts), average {average:0.00} (total sum / total count, not a mean of means)");

        var days = Merge.GroupBy<DayTotal, DateTime>(d => d.Day, (a, b) => a with { Orders = a.Orders + b.Orders, Total = a.Total + b.Total })
            .OrderByDescending(d => d.Total).Take(3);
        var top = await all.QueryAsync(
            "select date_trunc('day', created_at) as day, count(*) as orders, sum(total) as total from tour_orders group by 1", null, days);
        Console.WriteLine("    busiest days (per-shard GROUP BY combined): " +
                          string.Join(", ", top.Select(d => $"{d.Day:MM-dd} {d.Total:0} over {d.Orders} orders")));

        try
        {
            await all.QueryAsync("select * from tour_orders order by created_at asc limit 10", null, NewestFirst.Take(10));
        }
        catch (ShardMergeOrderException e)
        {
            Console.WriteLine($"    an ORDER BY that contradicts the merge is caught: shard {e.Shard}, row {e.RowIndex}");
        }
    }

    private static async Task ShowIdsAsync(ShardedDataSource source, ShardedConnection db)
    {
        await using var ids = await Step("Shard-aware ids: leasing a worker number from PostgreSQL", () => ShardIdGenerator.CreateAsync(source));
        var customer = 1234L;
        var id = ids.NextId(customer);
        var parts = ShardId.Decode(id);
        Console.WriteLine($"    worker {ids.Worker}: id {id} = {parts.Timestamp:HH:mm:ss.fff} | bucket {parts.Bucket} | sequence {parts.Sequence}");
        await db.ExecuteAsync("insert into tour_orders values (@CustomerId, @Id, 9.99, now())", new BenchOrder { CustomerId = customer, Id = id });
        var found = await db.ForId(id).QuerySingleAsync<BenchOrder>("select * from tour_orders where id = @Id", new { Id = id });
        Console.WriteLine($"    found again by its id alone on {source.ShardForId(id)} (customer {found.CustomerId}), no lookup table");
    }

    private static async Task ShowDistributedTransactionAsync(ShardedDataSource source, ShardedConnection db)
    {
        // Two customers on different shards: a transfer that must happen on both or on neither.
        var (from, to) = TwoCustomersOnDifferentShards(source);
        var result = await Step($"Distributed transaction: orders for customers {from} ({source.ShardFor(from)}) and {to} ({source.ShardFor(to)})", async () =>
        {
            await using var transaction = await db.BeginDistributedTransactionAsync();
            await db.ExecuteAsync("insert into tour_orders values (@CustomerId, @Id, @Total, now())",
                new[] { new BenchOrder { CustomerId = from, Id = 900_001, Total = -25 }, new BenchOrder { CustomerId = to, Id = 900_002, Total = 25 } });
            return await transaction.CommitAsync();
        });
        Console.WriteLine($"    {result.GlobalId}: two-phase commit on {string.Join(" and ", result.Shards)}, complete = {result.IsComplete}");

        await using (var transaction = await db.BeginDistributedTransactionAsync())
        {
            await db.ExecuteAsync("insert into tour_orders values (@CustomerId, @Id, @Total, now())",
                new[] { new BenchOrder { CustomerId = from, Id = 900_003, Total = -5 }, new BenchOrder { CustomerId = to, Id = 900_004, Total = 5 } });
            // Disposed without commit: rolled back on both shards.
        }

        var kept = await db.AllShards().ExecuteScalarAsync("select count(*) from tour_orders where id between 900001 and 900004", Merge.Count());
        var recovery = await source.RecoverAsync();
        Console.WriteLine($"    {kept} rows kept (the committed pair; the abandoned pair rolled back everywhere); " +
                          $"recovery found {recovery.Committed + recovery.RolledBack} in-doubt transactions");
    }

    private static async Task ShowBulkLoadAsync(ShardedConnection db)
    {
        var rows = SampleOrders(200_000).Select(o => new BenchOrder { CustomerId = o.CustomerId, Id = o.Id + 1_000_000, Total = o.Total, CreatedAt = o.CreatedAt });
        var result = await Step("Bulk load: 200,000 orders streamed with binary COPY to every shard at once", () => db.BulkInsertAsync("tour_orders", rows));
        Console.WriteLine($"    {result.Total} rows: {string.Join(", ", result.RowsPerShard.Select(p => $"{p.Key} {p.Value}"))}; " +
                          "each shard's COPY committed only after every shard's succeeded");
    }

    // Online resharding, live: writers keep writing while a set of buckets moves from s0 to s1 (its own databases).
    private static async Task ShowLiveMoveAsync()
    {
        var report = await Step("Moving 32 of 1,024 buckets from s0 to s1 while 8 writers write (stored map, fence, logical slot)",
            () => MovePauseRun.MeasureAsync(writers: 8, rows: 20_000, moveBuckets: 32, baseline: TimeSpan.FromSeconds(2), log: false));
        Console.WriteLine($"    {report.Move.RowsCopied:N0} rows moved in {report.Move.Duration.TotalSeconds:0.0} s; the moving buckets' writers paused " +
                          $"{report.Move.Pause.TotalMilliseconds:0} ms at the switch (their slowest write {report.Moving.Max:0} ms), other writers' p99 " +
                          $"{report.Others.P99:0.0} ms vs {report.Baseline.P99:0.0} ms with no move; {report.Errors} errors");
    }

    private static (long From, long To) TwoCustomersOnDifferentShards(ShardedDataSource source)
    {
        const long from = 42;
        var to = Enumerable.Range(43, 1000).Select(i => (long)i).First(c => source.ShardFor(c) != source.ShardFor(from));
        return (from, to);
    }
}

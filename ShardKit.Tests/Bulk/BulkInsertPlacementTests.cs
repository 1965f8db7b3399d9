namespace ShardKit.Tests.Bulk;

public sealed class BulkInsertPlacementTests
{
    [Test]
    public async Task Two_hundred_thousand_rows_each_land_on_the_shard_their_key_names()
    {
        const int count = 200_000;
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var result = await db.BulkInsertAsync(ctx.Table, BulkOrder.Many(count));

        Assert.That(result.Total, Is.EqualTo(count));
        Assert.That(result.RowsPerShard.Keys, Is.EquivalentTo(ctx.Shards.Names));
        var counts = await BulkChecks.CountsAsync(ctx);
        Assert.That(counts, Is.EquivalentTo(result.RowsPerShard));
        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That(counts[shard], Is.GreaterThan(count / 8), $"hash placement spreads rows: {shard}");
            var keys = await ctx.DirectAsync<long>(shard, $"select distinct customer_id from {ctx.Table}");
            var misplaced = keys.Where(k => ctx.Source.ShardFor(k) != shard).ToList();
            Assert.That(misplaced, Is.Empty, $"keys on {shard} that belong elsewhere");
        }

        var distinctIds = 0L;
        foreach (var shard in ctx.Shards.Names)
        {
            distinctIds += (await ctx.DirectAsync<long>(shard, $"select count(distinct id) from {ctx.Table}"))[0];
        }

        Assert.That(distinctIds, Is.EqualTo(count), "every input row exactly once");
    }

    [Test]
    public async Task An_async_stream_is_loaded_like_a_sequence()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var result = await db.BulkInsertAsync(ctx.Table, StreamAsync(10_000), new BulkInsertOptions { BatchSize = 250 });

        Assert.That(result.Total, Is.EqualTo(10_000));
        Assert.That(await BulkChecks.CountsAsync(ctx), Is.EquivalentTo(result.RowsPerShard));
        foreach (var shard in ctx.Shards.Names)
        {
            var keys = await ctx.DirectAsync<long>(shard, $"select distinct customer_id from {ctx.Table}");
            Assert.That(keys.Where(k => ctx.Source.ShardFor(k) != shard), Is.Empty, shard);
        }
    }

    [Test]
    public async Task A_shard_that_gets_no_row_is_listed_with_zero()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = Enumerable.Range(0, 50).Select(i => new BulkOrder { CustomerId = 42, Id = i, CreatedAt = DateTime.UnixEpoch }).ToList();

        var result = await db.BulkInsertAsync(ctx.Table, rows);

        var owner = ctx.Source.ShardFor(42L);
        Assert.That(result.RowsPerShard[owner], Is.EqualTo(50));
        Assert.That(result.RowsPerShard.Where(p => p.Key != owner).Select(p => p.Value), Is.All.Zero);
        Assert.That(await BulkChecks.CountsAsync(ctx), Is.EquivalentTo(result.RowsPerShard));
    }

    [Test]
    public async Task An_empty_input_writes_nothing_and_reports_zero()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var result = await db.BulkInsertAsync(ctx.Table, Array.Empty<BulkOrder>());

        Assert.That(result.Total, Is.Zero);
        Assert.That(result.RowsPerShard.Keys, Is.EquivalentTo(ctx.Shards.Names));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    private static async IAsyncEnumerable<BulkOrder> StreamAsync(int count)
    {
        foreach (var order in BulkOrder.Many(count))
        {
            if (order.Id % 1000 == 0)
            {
                await Task.Yield();
            }

            yield return order;
        }
    }
}

namespace ShardKit.Tests.Execution;

public sealed class BatchWriteTests
{
    private const string Ddl = "create table {0} (customer_id bigint not null, id bigint primary key)";

    public sealed record Item([property: ShardKey] long CustomerId, long Id);

    [Test]
    public async Task A_batch_lands_each_item_on_its_shard_and_reports_rows_per_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var items = Enumerable.Range(1, 400).Select(i => new Item(i, i)).ToList();

        var result = await db.ExecuteBatchAsync($"insert into {ctx.Table} (customer_id, id) values (@CustomerId, @Id)", items);

        Assert.That(result.Total, Is.EqualTo(400));
        foreach (var shard in ctx.Shards.Names)
        {
            var expected = items.Where(i => ctx.Source.ShardFor(i.CustomerId) == shard).Select(i => i.Id).Order().ToList();
            Assert.That(result.AffectedRows[shard], Is.EqualTo(expected.Count), shard);
            Assert.That(await ctx.DirectAsync<long>(shard, $"select id from {ctx.Table} order by id"), Is.EqualTo(expected), shard);
        }
    }

    [Test]
    public async Task A_failing_item_on_one_shard_leaves_nothing_on_any_shard_and_names_it()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var items = Enumerable.Range(1, 400).Select(i => new Item(i, i)).ToList();
        items.Add(items[^1] with { }); // a duplicate primary key on the last item's shard
        var failing = ctx.Source.ShardFor(items[^1].CustomerId);

        var error = Assert.ThrowsAsync<BroadcastWriteException>(() =>
            db.ExecuteBatchAsync($"insert into {ctx.Table} (customer_id, id) values (@CustomerId, @Id)", items));

        Assert.That(error!.FailedShards, Is.EqualTo(new[] { failing }));
        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That((await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"))[0], Is.Zero, shard);
        }
    }

    [Test]
    public async Task Without_transactions_the_shards_that_succeeded_keep_their_rows()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var items = Enumerable.Range(1, 100).Select(i => new Item(i, i)).ToList();
        items.Add(items[0] with { });
        var failing = ctx.Source.ShardFor(items[0].CustomerId);

        Assert.ThrowsAsync<BroadcastWriteException>(() =>
            db.ExecuteBatchAsync($"insert into {ctx.Table} (customer_id, id) values (@CustomerId, @Id)", items, transactionPerShard: false));

        var kept = 0L;
        foreach (var shard in ctx.Shards.Names.Where(s => s != failing))
        {
            kept += (await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"))[0];
        }

        Assert.That(kept, Is.EqualTo(items.Take(100).Count(i => ctx.Source.ShardFor(i.CustomerId) != failing)));
    }

    [Test]
    public async Task A_null_item_is_refused_before_anything_is_written()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        Item?[] items = [new Item(1, 1), null];
        var error = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.ExecuteBatchAsync($"insert into {ctx.Table} (customer_id, id) values (@CustomerId, @Id)", items));
        Assert.That(error!.Message, Does.Contain("Item 1"));
        Assert.That((await db.AllShards().ExecuteScalarAsync($"select count(*) from {ctx.Table}", Merge.Count())), Is.Zero);
    }

    [Test]
    public async Task Items_without_a_shard_key_are_refused_with_the_fix()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var error = Assert.ThrowsAsync<ShardRoutingException>(() => db.ExecuteBatchAsync($"insert into {ctx.Table} values (@A, @B)", new[] { new { A = 1, B = 2 } }));
        Assert.That(error!.Message, Does.Contain("[ShardKey]"));
    }
}

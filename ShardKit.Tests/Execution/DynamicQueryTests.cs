using static ShardKit.Tests.Execution.MultiMapTests;

namespace ShardKit.Tests.Execution;

/// <summary>The non-generic Query (dynamic rows) routed to one shard and fanned out with merges, on real shards.</summary>
public sealed class DynamicQueryTests
{
    [Test]
    public async Task Dynamic_rows_route_by_a_registered_key_name()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, b => b.AddEntity<Order>(), stem: "dyn");
        await SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();
        var sql = $"select id, name from {ctx.Table} where customer_id = @CustomerId order by id";

        var rows = (await db.QueryAsync(sql, new { CustomerId = 42L })).ToList();
        var sync = db.Query(sql, new { CustomerId = 42L }).ToList();

        Assert.That(rows.Select(r => (long)r.id), Is.EqualTo(new long[] { 421, 422, 423 }));
        Assert.That(rows.Select(r => (string)r.name), Is.All.EqualTo("customer 42"), "no decoy row of another shard");
        Assert.That(((IDictionary<string, object>)rows[0]).Keys, Is.EqualTo(new[] { "id", "name" }));
        Assert.That(sync.Select(r => (long)r.id), Is.EqualTo(new long[] { 421, 422, 423 }));
    }

    [Test]
    public async Task Dynamic_rows_with_a_key_list_come_from_each_key_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, b => b.AddEntity<Order>(), stem: "dyn");
        await SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();
        var keys = new long[] { 2, 3, 5, 7, 11, 13 };

        var rows = await db.QueryAsync($"select customer_id from {ctx.Table} where customer_id = any(@CustomerId)", new { CustomerId = keys });

        Assert.That(rows.Select(r => (long)r.customer_id).Order(), Is.EqualTo(keys.SelectMany(k => new[] { k, k, k })));
    }

    [Test]
    public async Task Dynamic_rows_without_a_known_key_are_refused()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "dyn");
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ShardRoutingException>(() => db.QueryAsync($"select * from {ctx.Table} where customer_id = @CustomerId", new { CustomerId = 42L }));
        Assert.That(error!.Message, Does.Contain("AddEntity<T>()").And.Contain("AllShards"));
        Assert.Throws<ShardRoutingException>(() => db.Query($"select * from {ctx.Table}"));
        Assert.That(db.OnShard("s0").Query("select 1 as one").Single().one, Is.EqualTo(1), "an explicit shard needs no key");
    }

    [Test]
    public async Task Fan_out_dynamic_rows_merge_in_order_by_columns_read_by_name()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "dyn");
        await SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();
        var plan = Merge.OrderByDescending(Merge.Column<int>("total")).ThenBy(Merge.Column<long>("id")).Take(10);

        var rows = await db.AllShards().QueryAsync(
            $"select id, total::int as total from {ctx.Table} where name <> 'decoy' order by total desc, id limit @ShardLimit",
            new { plan.ShardLimit }, plan);

        var expected = Enumerable.Range(1, 60).SelectMany(c => Enumerable.Range(1, 3).Select(i => (Id: (long)(c * 10 + i), Total: c + i)))
            .OrderByDescending(r => r.Total).ThenBy(r => r.Id).Take(10).Select(r => r.Id);
        Assert.That(rows.Select(r => (long)r.id), Is.EqualTo(expected));

        var sync = db.AllShards().Query($"select id from {ctx.Table} order by id", null, Merge.OrderBy(Merge.Column<long>("id")));
        Assert.That(sync.Select(r => (long)r.id), Is.Ordered);
        Assert.That(sync, Has.Count.EqualTo(180 + ctx.Shards.Count - 1));
    }

    [Test]
    public async Task Fan_out_dynamic_rows_follow_the_merge_rules_of_typed_rows()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "dyn");
        await SeedAsync(ctx, customers: 20);
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ShardMergeRequiredException>(() => db.AllShards().QueryAsync($"select id from {ctx.Table} order by id limit 5"));
        Assert.That(error!.Message, Does.Contain("Merge"));

        var all = await db.AllShards().QueryAsync($"select name from {ctx.Table}");
        Assert.That(all, Has.Count.EqualTo(60 + ctx.Shards.Count - 1));
        var names = await db.AllShards().QueryAsync($"select name from {ctx.Table}", null, Merge.Distinct<dynamic>());
        Assert.That(names, Has.Count.EqualTo(21), "20 customers and the decoy");
    }

    [Test]
    public async Task Merge_Column_names_the_columns_a_row_has_when_the_name_is_wrong()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "dyn");
        await SeedAsync(ctx, customers: 20);
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ShardKitException>(() => db.AllShards().QueryAsync(
            $"select id, created_at from {ctx.Table} order by created_at", null, Merge.OrderBy(Merge.Column<DateTime>("CreatedAt"))));
        Assert.That(error!.Message, Does.Contain("'CreatedAt'").And.Contain("id, created_at"));

        var typed = Assert.Throws<ShardKitException>(() => Merge.Column<long>("id")(new Order()));
        Assert.That(typed!.Message, Does.Contain("Merge.OrderBy<Order, DateTime>"));
        Assert.Throws<ArgumentException>(() => Merge.Column<long>(""));
    }
}

using Dapper;
using Npgsql;

namespace ShardKit.Tests.Execution;

/// <summary>Dapper's multi-mapping routed to one shard and fanned out with merges, on real shards.</summary>
public sealed class MultiMapTests
{
    internal const string Ddl =
        "create table {0} (customer_id bigint not null, id bigint not null, total int not null, created_at timestamptz not null, " +
        "name text not null, sku text not null)";

    public sealed class Order
    {
        [ShardKey] public long CustomerId { get; init; }
        public long Id { get; init; }
        public int Total { get; init; }
        public DateTime CreatedAt { get; init; }
    }

    public sealed class Customer
    {
        public long Ref { get; init; }
        public string Name { get; init; } = "";
    }

    public sealed class Line
    {
        public string Sku { get; init; } = "";
    }

    public sealed class SeedRow
    {
        [ShardKey] public long CustomerId { get; init; }
        public long Id { get; init; }
        public int Total { get; init; }
        public DateTime CreatedAt { get; init; }
        public string Name { get; init; } = "";
        public string Sku { get; init; } = "";
    }

    public sealed record OrderView(Order Order, Customer Customer, Line? Line = null);

    private static readonly DateTime Epoch = new(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);

    /// <summary>
    /// Customers 1..<paramref name="customers"/> with three orders each, written through ShardKit (so on their own
    /// shards), plus a decoy row for customer 42 on every other shard: a query that reached a wrong shard would see it.
    /// </summary>
    internal static async Task SeedAsync(ShardTestContext ctx, int customers = 60)
    {
        // A data source of its own, with the same placement: the one under test learns no key name from the seeding.
        var builder = new ShardedDataSourceBuilder();
        for (var i = 0; i < ctx.Shards.Count; i++)
        {
            builder.AddShard(ctx.Shards.Names[i], ctx.Shards.ConnectionStrings[i]);
        }

        await using var seeder = builder.Build();
        await using var db = seeder.CreateConnection();
        var rows = Enumerable.Range(1, customers).SelectMany(c => Enumerable.Range(1, 3).Select(i => new SeedRow
        {
            CustomerId = c,
            Id = c * 10 + i,
            Total = c + i,
            CreatedAt = Epoch.AddMinutes(c * 10 + i),
            Name = $"customer {c}",
            Sku = $"sku-{c}-{i}",
        })).ToList();
        await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id, @Total, @CreatedAt, @Name, @Sku)", rows);

        foreach (var shard in ctx.Shards.Names.Where(s => s != ctx.Source.ShardFor(42L)))
        {
            await db.OnShard(shard).ExecuteAsync(
                $"insert into {ctx.Table} values (42, 999, 0, @At, 'decoy', 'decoy')", new { At = Epoch });
        }
    }

    private static string Select(ShardTestContext ctx, string where = "where customer_id = @CustomerId", string order = "order by id") =>
        $"select customer_id, id, total, created_at, customer_id as ref, name, sku from {ctx.Table} {where} {order}";

    [Test]
    public async Task Multi_mapping_two_types_runs_on_the_key_shard_only()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();

        var views = (await db.QueryAsync<Order, Customer, OrderView>(Select(ctx), (o, c) => new OrderView(o, c),
            new { CustomerId = 42L }, splitOn: "ref")).ToList();

        Assert.That(views.Select(v => v.Order.Id), Is.EqualTo(new long[] { 421, 422, 423 }));
        Assert.That(views.Select(v => v.Customer.Name), Is.All.EqualTo("customer 42"));
        Assert.That(views.Select(v => v.Customer.Ref), Is.All.EqualTo(42L));

        var sync = db.Query<Order, Customer, OrderView>(Select(ctx), (o, c) => new OrderView(o, c), new { CustomerId = 42L }, splitOn: "ref").ToList();
        Assert.That(sync.Select(v => v.Order.Id), Is.EqualTo(new long[] { 421, 422, 423 }));
    }

    [Test]
    public async Task Multi_mapping_three_types_splits_at_each_named_column()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();

        var views = (await db.QueryAsync<Order, Customer, Line, OrderView>(Select(ctx), (o, c, l) => new OrderView(o, c, l),
            new { CustomerId = 42L }, splitOn: "ref,sku")).ToList();
        var sync = db.Query<Order, Customer, Line, OrderView>(Select(ctx), (o, c, l) => new OrderView(o, c, l),
            new { CustomerId = 42L }, splitOn: "ref,sku").ToList();

        Assert.That(views.Select(v => v.Line!.Sku), Is.EqualTo(new[] { "sku-42-1", "sku-42-2", "sku-42-3" }));
        Assert.That(views.Select(v => v.Customer.Name), Is.All.EqualTo("customer 42"));
        Assert.That(sync.Select(v => v.Line!.Sku), Is.EqualTo(views.Select(v => v.Line!.Sku)));
    }

    [Test]
    public async Task Multi_mapping_with_a_key_list_reads_each_shard_its_own_keys()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();
        var keys = new long[] { 1, 2, 3, 5, 8, 13, 21, 34 };
        Assert.That(keys.Select(k => ctx.Source.ShardFor(k)).Distinct().Count(), Is.GreaterThan(1), "the keys span shards");

        var views = await db.QueryAsync<Order, Customer, OrderView>(Select(ctx, "where customer_id = any(@CustomerId)", ""),
            (o, c) => new OrderView(o, c), new { CustomerId = keys }, splitOn: "ref");

        Assert.That(views.Select(v => v.Order.CustomerId).Distinct().Order(), Is.EqualTo(keys));
        Assert.That(views.Count(), Is.EqualTo(keys.Length * 3));
        Assert.That(views.All(v => v.Customer.Name == $"customer {v.Order.CustomerId}"), Is.True);
    }

    [Test]
    public async Task Multi_mapping_on_a_ForKey_scope_uses_the_scope_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();

        var views = await db.ForKey(42L).QueryAsync<Order, Customer, OrderView>(Select(ctx, "", "order by id"),
            (o, c) => new OrderView(o, c), splitOn: "ref");

        Assert.That(views.Select(v => v.Order.CustomerId).Distinct().Select(k => ctx.Source.ShardFor(k)), Is.All.EqualTo(ctx.Source.ShardFor(42L)));
        Assert.That(views.Select(v => v.Customer.Name), Does.Not.Contain("decoy"));
    }

    [Test]
    public async Task Multi_mapping_without_a_key_is_refused_before_any_shard_is_asked()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.QueryAsync<Customer, Line, Customer>(Select(ctx, "", ""), (c, _) => c, new { Name = "x" }, splitOn: "sku"));
        Assert.That(error!.Message, Does.Contain("ForKey").And.Contain("AllShards"));
        Assert.Throws<ShardRoutingException>(() =>
            db.Query<Customer, Line, Customer>(Select(ctx, "", ""), (c, _) => c, null, splitOn: "sku"));
    }

    [Test]
    public async Task A_wrong_splitOn_is_Dapper_s_error_with_the_shard_named_and_the_connection_stays_usable()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await SeedAsync(ctx, customers: 50);
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ArgumentException>(() =>
            db.QueryAsync<Order, Customer, OrderView>(Select(ctx), (o, c) => new OrderView(o, c), new { CustomerId = 42L }, splitOn: "no_such_column"));
        Assert.That(error!.Message, Does.Contain("splitOn"));
        Assert.That(error.Data["ShardKit.Shard"], Is.EqualTo(ctx.Source.ShardFor(42L)));

        var views = await db.QueryAsync<Order, Customer, OrderView>(Select(ctx), (o, c) => new OrderView(o, c), new { CustomerId = 42L }, splitOn: "ref");
        Assert.That(views.Count(), Is.EqualTo(3));
    }

    [Test]
    public async Task A_cancelled_multi_mapping_query_throws_and_frees_the_connection()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await using var db = ctx.Source.CreateConnection();
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var command = new CommandDefinition($"select 1 as id, 2 as ref, 'n' as name from pg_sleep(10) where @CustomerId > 0",
            new { CustomerId = 7L }, cancellationToken: cancel.Token);

        Assert.That(async () => await db.QueryAsync<Order, Customer, OrderView>(command, (o, c) => new OrderView(o, c), "ref"),
            Throws.InstanceOf<OperationCanceledException>().Or.InnerException.InstanceOf<OperationCanceledException>());

        Assert.That(await db.ExecuteScalarAsync<int>("select 1 where @CustomerId > 0", new { CustomerId = 7L }), Is.EqualTo(1));
    }

    [Test]
    public async Task Fan_out_multi_mapping_merges_by_a_key_of_the_mapped_row_and_takes_the_global_top()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();
        var plan = Merge.OrderByDescending<OrderView, DateTime>(v => v.Order.CreatedAt).ThenByDescending(v => v.Order.Id).Take(7);

        var newest = await db.AllShards().QueryAsync<Order, Customer, OrderView>(
            Select(ctx, "where name <> 'decoy'", "order by created_at desc, id desc limit @ShardLimit"),
            (o, c) => new OrderView(o, c), new { plan.ShardLimit }, plan, splitOn: "ref");

        var expected = Enumerable.Range(1, 60).SelectMany(c => Enumerable.Range(1, 3).Select(i => (long)(c * 10 + i)))
            .OrderByDescending(id => id).Take(7);
        Assert.That(newest.Select(v => v.Order.Id), Is.EqualTo(expected));
        Assert.That(newest.All(v => v.Customer.Name == $"customer {v.Order.CustomerId}"), Is.True);
        Assert.That(newest.IsComplete, Is.True);
    }

    [Test]
    public async Task Fan_out_multi_mapping_of_ordered_SQL_needs_a_plan_and_concat_says_so_on_purpose()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await SeedAsync(ctx, customers: 20);
        await using var db = ctx.Source.CreateConnection();
        var sql = Select(ctx, "", "order by id");

        var error = Assert.ThrowsAsync<ShardMergeRequiredException>(() =>
            db.AllShards().QueryAsync<Order, Customer, OrderView>(sql, (o, c) => new OrderView(o, c), splitOn: "ref"));
        Assert.That(error!.Message, Does.Contain("Merge"));

        var all = await db.AllShards().QueryAsync<Order, Customer, OrderView>(sql, (o, c) => new OrderView(o, c), null,
            Merge.Concat<OrderView>(), splitOn: "ref");
        Assert.That(all, Has.Count.EqualTo(20 * 3 + ctx.Shards.Count - 1));
    }

    [Test]
    public async Task Fan_out_multi_mapping_of_three_types_blocks_in_the_sync_form_and_merges_in_order()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await SeedAsync(ctx, customers: 30);
        await using var db = ctx.Source.CreateConnection();

        var rows = db.AllShards().Query<Order, Customer, Line, OrderView>(Select(ctx, "where name <> 'decoy'", "order by id"),
            (o, c, l) => new OrderView(o, c, l), merge: Merge.OrderBy<OrderView, long>(v => v.Order.Id), splitOn: "ref,sku");

        Assert.That(rows.Select(v => v.Order.Id), Is.Ordered);
        Assert.That(rows, Has.Count.EqualTo(90));
        Assert.That(rows.All(v => v.Line!.Sku.StartsWith($"sku-{v.Order.CustomerId}-", StringComparison.Ordinal)), Is.True);
    }

    [Test]
    public async Task Fan_out_multi_mapping_with_a_wrong_splitOn_names_every_failed_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await SeedAsync(ctx, customers: 40);
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ShardAggregateException>(() => db.AllShards().QueryAsync<Order, Customer, OrderView>(
            Select(ctx, "", ""), (o, c) => new OrderView(o, c), splitOn: "nope"));
        Assert.That(error!.Failures.Select(f => f.Error), Is.All.InstanceOf<ArgumentException>());
        Assert.That(error.FailedShards, Is.Not.Empty);
    }

    [Test]
    public async Task Fan_out_multi_mapping_stops_when_cancelled()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "mm");
        await using var db = ctx.Source.CreateConnection();
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));

        Assert.That(async () => await db.AllShards().QueryAsync<Order, Customer, OrderView>(
                "select 1 as id, 2 as ref, 'mm_cancel_marker' as name from pg_sleep(10)", (o, c) => new OrderView(o, c),
                splitOn: "ref", cancellationToken: cancel.Token),
            Throws.InstanceOf<OperationCanceledException>());
        await ctx.AssertNotRunningAsync("mm_cancel_marker");
    }
}

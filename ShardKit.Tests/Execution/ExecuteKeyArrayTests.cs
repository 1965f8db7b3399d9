using Dapper;

namespace ShardKit.Tests.Execution;

public sealed class ExecuteKeyArrayTests
{
    private const string Ddl = "create table {0} (customer_id bigint not null, id bigint not null, total int not null)";

    public sealed class Order
    {
        [ShardKey] public long CustomerId { get; init; }
        public long Id { get; init; }
        public int Total { get; init; }
    }

    private static async Task<List<Order>> InsertAsync(ShardTestContext ctx, ShardedConnection db, int customers)
    {
        var orders = Enumerable.Range(1, customers).SelectMany(c => new[] { new Order { CustomerId = c, Id = 1 }, new Order { CustomerId = c, Id = 2 } }).ToList();
        await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id, @Total)", orders);
        return orders;
    }

    private static async Task<Dictionary<long, int>> TotalsAsync(ShardTestContext ctx)
    {
        var totals = new Dictionary<long, int>();
        foreach (var shard in ctx.Shards.Names)
        {
            foreach (var row in await ctx.DirectAsync<(long CustomerId, int Total)>(shard, $"select customer_id, sum(total)::int from {ctx.Table} group by customer_id"))
            {
                Assert.That(ctx.Source.ShardFor(row.CustomerId), Is.EqualTo(shard), "every row stays on its own shard");
                totals[row.CustomerId] = row.Total;
            }
        }

        return totals;
    }

    [Test]
    public async Task Execute_with_a_key_array_splits_per_shard_and_returns_the_summed_affected_rows()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await InsertAsync(ctx, db, 40);
        var keys = new long[] { 1, 2, 3, 5, 8, 13, 21, 34 };
        Assert.That(keys.Select(k => ctx.Source.ShardFor(k)).Distinct().Count(), Is.GreaterThan(1), "the keys span shards");

        var updated = await db.ExecuteAsync($"update {ctx.Table} set total = total + 1 where customer_id = any(@CustomerId)", new { CustomerId = keys });

        Assert.That(updated, Is.EqualTo(keys.Length * 2));
        var totals = await TotalsAsync(ctx);
        Assert.That(totals.Where(t => t.Value != 0).Select(t => t.Key).Order(), Is.EqualTo(keys));
        Assert.That(totals.Values.Where(v => v != 0), Is.All.EqualTo(2));

        // The synchronous form splits alike.
        Assert.That(db.Execute($"update {ctx.Table} set total = total + 1 where customer_id = any(@CustomerId)", new { CustomerId = keys.ToList() }),
            Is.EqualTo(keys.Length * 2));
    }

    [Test]
    public async Task Execute_routes_by_a_known_key_name_in_every_parameter_shape()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await InsertAsync(ctx, db, 20);
        var key = 7L;
        var p = new DynamicParameters();
        p.Add("customerid", key); // Dapper matches names case-insensitively; so does ShardKit

        Assert.That(await db.ExecuteAsync($"update {ctx.Table} set total = total + 1 where customer_id = @CustomerId and id = 1", new { CustomerId = key }), Is.EqualTo(1));
        Assert.That(await db.ExecuteAsync($"update {ctx.Table} set total = total + 1 where customer_id = @CustomerId and id = 1",
            new Dictionary<string, object> { ["CustomerId"] = key }), Is.EqualTo(1));
        Assert.That(await db.ExecuteAsync($"update {ctx.Table} set total = total + 1 where customer_id = @CustomerId and id = 1", p), Is.EqualTo(1));
        Assert.That(await db.ExecuteScalarAsync<int>($"select total from {ctx.Table} where customer_id = @CustomerId and id = 1", new { CustomerId = key }), Is.EqualTo(3));
    }

    [Test]
    public async Task Execute_with_a_key_array_that_fails_on_one_shard_says_what_applied_on_each_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await InsertAsync(ctx, db, 40);
        var keys = Enumerable.Range(1, 40).Select(i => (long)i).ToArray();
        var failing = ctx.Source.ShardFor(1L);
        await using (var conn = ctx.Source.GetShardDataSource(failing).CreateConnection())
        {
            await conn.OpenAsync();
            await conn.ExecuteAsync($"alter table {ctx.Table} add constraint small check (total < 100)");
        }

        var error = Assert.ThrowsAsync<BroadcastWriteException>(() =>
            db.ExecuteAsync($"update {ctx.Table} set total = total + 500 where customer_id = any(@CustomerId)", new { CustomerId = keys }));

        Assert.That(error!.FailedShards, Is.EqualTo(new[] { failing }));
        Assert.That(error.NotAppliedShards, Is.EqualTo(new[] { failing }), "the server refused it there");
        Assert.That(error.InDoubtShards, Is.Empty);
        var others = ctx.Shards.Names.Where(s => s != failing).ToList();
        Assert.That(error.AffectedRows.Keys, Is.EquivalentTo(others));
        foreach (var shard in others)
        {
            var expected = 2 * keys.Count(k => ctx.Source.ShardFor(k) == shard);
            Assert.That(error.AffectedRows[shard], Is.EqualTo(expected), shard);
            Assert.That(error.Message, Does.Contain($"{shard} ({expected} rows)"));
            Assert.That((await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table} where total = 500"))[0], Is.EqualTo(expected), shard);
        }

        Assert.That((await ctx.DirectAsync<int>(failing, $"select count(*)::int from {ctx.Table} where total <> 0"))[0], Is.Zero);
    }

    [Test]
    public async Task Execute_without_a_known_key_name_is_refused_and_names_the_fix()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var error = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.ExecuteAsync($"delete from {ctx.Table} where customer_id = any(@CustomerId)", new { CustomerId = new long[] { 1, 2 } }));
        Assert.That(error!.Message, Does.Contain("AddEntity<T>()").And.Contain("ForKey").And.Contain("AllShards"));
    }

    public sealed class Invoice
    {
        [ShardKey] public long AccountId { get; init; }
    }

    [Test]
    public async Task An_entity_registered_with_AddEntity_routes_untyped_commands_from_the_first_call()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, b => b.AddEntity<Order>());
        await using var db = ctx.Source.CreateConnection();
        var keys = new long[] { 3, 4, 5, 6, 7, 8 };

        var inserted = await db.ExecuteAsync($"insert into {ctx.Table} select k, 1, 0 from unnest(@CustomerId) k", new { CustomerId = keys });

        Assert.That(inserted, Is.EqualTo(keys.Length));
        Assert.That((await TotalsAsync(ctx)).Keys.Order(), Is.EqualTo(keys));
    }

    [Test]
    public async Task Two_known_keys_that_place_a_command_on_different_shards_are_refused()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, b => b.AddEntity<Order>().AddEntity<Invoice>());
        await using var db = ctx.Source.CreateConnection();
        var other = Enumerable.Range(2, 100).Select(i => (long)i).First(k => ctx.Source.ShardFor(k) != ctx.Source.ShardFor(1L));

        var error = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @AccountId, 0)", new { CustomerId = 1L, AccountId = other }));
        Assert.That(error!.Message, Does.Contain("CustomerId").And.Contain("AccountId").And.Contain("ForKey"));

        // Keys that agree are fine.
        Assert.That(await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @AccountId, 0)", new { CustomerId = 1L, AccountId = 1L }), Is.EqualTo(1));
        foreach (var shard in ctx.Shards.Names)
        {
            var expected = shard == ctx.Source.ShardFor(1L) ? 1 : 0;
            Assert.That((await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table}"))[0], Is.EqualTo(expected), shard);
        }
    }

    [Test]
    public void AddEntity_of_a_type_without_a_shard_key_is_refused()
    {
        var error = Assert.Throws<ShardConfigurationException>(() => new ShardedDataSourceBuilder().AddEntity<string>());
        Assert.That(error!.Message, Does.Contain("String has no [ShardKey]"));
    }
}

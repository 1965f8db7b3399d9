using Dapper;

namespace ShardKit.Tests;

public sealed class ShardedConnectionRoutingTests
{
    private const string OrdersDdl = "create table {0} (customer_id bigint not null, id bigint not null, total numeric not null, primary key (customer_id, id))";

    public sealed class Order
    {
        [ShardKey] public long CustomerId { get; init; }
        public long Id { get; init; }
        public decimal Total { get; init; }
    }

    public sealed class Received
    {
        [ShardKey] public long CustomerId { get; init; }
        public int Port { get; init; }
    }

    private static Order[] SampleOrders(int customers) =>
        Enumerable.Range(1, customers).SelectMany(c => Enumerable.Range(1, 3).Select(i => new Order { CustomerId = c, Id = i, Total = c * 10 + i })).ToArray();

    [Test]
    public async Task Entity_parameters_route_each_row_to_its_own_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        await using var db = ctx.Source.CreateConnection();
        foreach (var order in SampleOrders(40))
        {
            await db.ExecuteAsync($"insert into {ctx.Table} (customer_id, id, total) values (@CustomerId, @Id, @Total)", order);
        }

        foreach (var shard in ctx.Shards.Names)
        {
            var customers = await ctx.DirectAsync<long>(shard, $"select distinct customer_id from {ctx.Table}");
            Assert.That(customers.Select(c => ctx.Source.ShardFor(c)), Is.All.EqualTo(shard), $"rows on {shard}");
        }

        var total = 0;
        foreach (var shard in ctx.Shards.Names)
        {
            total += (await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table}"))[0];
        }

        Assert.That(total, Is.EqualTo(120));
    }

    [Test]
    public async Task Result_type_key_routes_a_parameter_object_by_member_name()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        await using var db = ctx.Source.CreateConnection();
        await db.ExecuteAsync($"insert into {ctx.Table} (customer_id, id, total) values (@CustomerId, @Id, @Total)", SampleOrders(20));

        var mine = (await db.QueryAsync<Order>($"select * from {ctx.Table} where customer_id = @CustomerId order by id", new { CustomerId = 7L })).ToList();
        Assert.That(mine.Select(o => o.Id), Is.EqualTo(new long[] { 1, 2, 3 }));
        Assert.That(mine, Has.All.Matches<Order>(o => o.CustomerId == 7));

        // int and long keys of equal value agree: new { CustomerId = 7 } finds the same shard.
        var first = await db.QueryFirstAsync<Order>($"select * from {ctx.Table} where customer_id = @CustomerId order by id", new { CustomerId = 7 });
        Assert.That(first.Total, Is.EqualTo(71m));
    }

    [Test]
    public async Task An_array_key_is_split_so_each_shard_receives_only_its_own_keys()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        await using var db = ctx.Source.CreateConnection();
        var keys = Enumerable.Range(1, 64).Select(i => (long)i).ToArray();

        var received = (await db.QueryAsync<Received>("select k as customer_id, inet_server_port() as port from unnest(@CustomerId) k",
            new { CustomerId = keys })).ToList();

        Assert.That(received.Select(r => r.CustomerId).Order(), Is.EqualTo(keys));
        Assert.That(received.Select(r => ctx.ShardOfPort(r.Port)), Is.EqualTo(received.Select(r => ctx.Source.ShardFor(r.CustomerId))));
        Assert.That(received.Select(r => r.Port).Distinct().Count(), Is.EqualTo(ctx.Shards.Count), "64 keys reach every shard");
    }

    [Test]
    public async Task A_list_of_keyed_items_is_written_per_shard_and_the_total_returned()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        await using var db = ctx.Source.CreateConnection();
        var orders = SampleOrders(50).ToList();

        var written = await db.ExecuteAsync($"insert into {ctx.Table} (customer_id, id, total) values (@CustomerId, @Id, @Total)", orders);

        Assert.That(written, Is.EqualTo(150));
        foreach (var shard in ctx.Shards.Names)
        {
            var expected = orders.Count(o => ctx.Source.ShardFor(o.CustomerId) == shard);
            Assert.That((await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table}"))[0], Is.EqualTo(expected), shard);
        }
    }

    [Test]
    public async Task Sync_methods_route_like_async_ones()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        using var db = ctx.Source.CreateConnection();
        Assert.That(db.Execute($"insert into {ctx.Table} (customer_id, id, total) values (@CustomerId, @Id, @Total)", SampleOrders(10)), Is.EqualTo(30));
        Assert.That(db.Query<Order>($"select * from {ctx.Table} where customer_id = @CustomerId", new { CustomerId = 3L }).Count(), Is.EqualTo(3));
        Assert.That(db.QuerySingle<Order>($"select * from {ctx.Table} where customer_id = @CustomerId and id = 2", new { CustomerId = 3L }).Total, Is.EqualTo(32m));
        Assert.That(db.QuerySingleOrDefault<Order>($"select * from {ctx.Table} where customer_id = @CustomerId and id = 9", new { CustomerId = 3L }), Is.Null);
        Assert.That(db.QueryFirstOrDefault<Order>($"select * from {ctx.Table} where customer_id = @CustomerId order by id desc", new { CustomerId = 3L })!.Id, Is.EqualTo(3));
        Assert.That(db.ForKey(3L).ExecuteScalar<long>($"select count(*) from {ctx.Table} where customer_id = 3"), Is.EqualTo(3));
        Assert.That(db.Query<Received>("select k as customer_id, inet_server_port() as port from unnest(@CustomerId) k",
            new { CustomerId = new long[] { 1, 2, 3, 4, 5, 6, 7, 8 } }).Count(), Is.EqualTo(8));
    }

    [Test]
    public async Task Unbuffered_query_streams_the_rows_of_the_key_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        await using var db = ctx.Source.CreateConnection();
        await db.ExecuteAsync($"insert into {ctx.Table} (customer_id, id, total) values (@CustomerId, @Id, @Total)", SampleOrders(10));
        var ids = new List<long>();
        await foreach (var o in db.QueryUnbufferedAsync<Order>($"select * from {ctx.Table} where customer_id = @CustomerId order by id", new { CustomerId = 4L }))
        {
            ids.Add(o.Id);
        }

        Assert.That(ids, Is.EqualTo(new long[] { 1, 2, 3 }));
    }

    [Test]
    public async Task Explicit_scopes_target_one_shard_whatever_the_parameters()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        await using var db = ctx.Source.CreateConnection();
        var port = await db.OnShard(ctx.Shards.Names[2]).ExecuteScalarAsync<int>("select inet_server_port()");
        Assert.That(ctx.ShardOfPort(port), Is.EqualTo(ctx.Shards.Names[2]));
        var keyPort = await db.ForKey("tenant-42").ExecuteScalarAsync<int>("select inet_server_port()");
        Assert.That(ctx.ShardOfPort(keyPort), Is.EqualTo(ctx.Source.ShardFor("tenant-42")));
    }

    [Test]
    public async Task A_query_without_a_shard_key_throws_and_names_the_fix_before_touching_a_database()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        await using var db = ctx.Source.CreateConnection();
        var error = Assert.ThrowsAsync<ShardRoutingException>(() => db.ExecuteAsync($"delete from {ctx.Table}"));
        Assert.That(error!.Message, Does.Contain("ForKey").And.Contain("OnShard").And.Contain("AllShards"));
        var noMember = Assert.ThrowsAsync<ShardRoutingException>(() => db.QueryAsync<Order>($"select * from {ctx.Table} where id = @Id", new { Id = 1L }));
        Assert.That(noMember!.Message, Does.Contain("CustomerId"));
    }

    [Test]
    public async Task A_null_key_throws_and_nothing_is_written()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        await using var db = ctx.Source.CreateConnection();
        var error = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.QueryAsync<Order>($"select * from {ctx.Table} where customer_id = @CustomerId", new { CustomerId = (long?)null }));
        Assert.That(error!.Message, Does.Contain("CustomerId").And.Contain("null"));
    }

    [Test]
    public async Task A_batch_with_a_bad_item_writes_nothing_anywhere()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (code text, n int)");
        await using var db = ctx.Source.CreateConnection();
        var items = new[] { new Tenant { Code = "a", N = 1 }, new Tenant { Code = null, N = 2 } };
        Assert.ThrowsAsync<ShardRoutingException>(() => db.ExecuteAsync($"insert into {ctx.Table} values (@Code, @N)", items));
        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That((await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table}"))[0], Is.Zero);
        }
    }

    public sealed class Tenant
    {
        [ShardKey] public string? Code { get; init; }
        public int N { get; init; }
    }

    [Test]
    public async Task A_dapper_DynamicParameters_object_routes_by_name()
    {
        await using var ctx = await ShardTestContext.CreateAsync(OrdersDdl);
        await using var db = ctx.Source.CreateConnection();
        var p = new DynamicParameters();
        p.Add("CustomerId", 9L);
        var received = await db.QuerySingleAsync<Received>("select @CustomerId as customer_id, inet_server_port() as port", p);
        Assert.That(ctx.ShardOfPort(received.Port), Is.EqualTo(ctx.Source.ShardFor(9L)));
    }
}

using Dapper;
using Npgsql;
using static ShardKit.Tests.Execution.MultiMapTests;

namespace ShardKit.Tests.Execution;

/// <summary>QueryMultiple on one shard: the grid's result sets, and the connection held until the grid is disposed.</summary>
public sealed class GridReaderTests
{
    private static string Sql(ShardTestContext ctx) =>
        $"select * from {ctx.Table} where customer_id = @CustomerId order by id; " +
        $"select count(*) from {ctx.Table} where customer_id = @CustomerId; " +
        $"select customer_id, id, total, created_at, customer_id as ref, name from {ctx.Table} where customer_id = @CustomerId order by id";

    [Test]
    public async Task QueryMultiple_reads_every_result_set_from_the_key_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, b => b.AddEntity<Order>(), stem: "grid");
        await SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();

        await using (var grid = await db.QueryMultipleAsync(Sql(ctx), new { CustomerId = 42L }))
        {
            Assert.That(grid.Shard, Is.EqualTo(ctx.Source.ShardFor(42L)));
            Assert.That((await grid.ReadAsync<Order>()).Select(o => o.Id), Is.EqualTo(new long[] { 421, 422, 423 }));
            Assert.That(await grid.ReadSingleAsync<long>(), Is.EqualTo(3), "no decoy row of another shard");
            var views = grid.Read<Order, Customer, OrderView>((o, c) => new OrderView(o, c), splitOn: "ref").ToList();
            Assert.That(views.Select(v => v.Customer.Name), Is.All.EqualTo("customer 42"));
            Assert.That(grid.IsConsumed, Is.True);
        }

        using var sync = db.QueryMultiple(Sql(ctx), new { CustomerId = 42L });
        Assert.That(sync.Read().Select(r => (long)r.id), Is.EqualTo(new long[] { 421, 422, 423 }));
        Assert.That(sync.ReadFirst<long>(), Is.EqualTo(3));
    }

    [Test]
    public async Task An_open_grid_holds_the_connection_until_it_is_disposed()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "grid");
        await SeedAsync(ctx, customers: 45);
        await using var db = ctx.Source.CreateConnection();
        var scope = db.ForKey(42L);

        var grid = await scope.QueryMultipleAsync($"select 1; select 2");
        var busy = Assert.ThrowsAsync<ShardedConnectionBusyException>(() => scope.QueryAsync<int>("select 3"));
        Assert.That(busy!.Message, Does.Contain("grid reader not yet disposed"));
        Assert.Throws<ShardedConnectionBusyException>(() => db.OnShard("s0").QueryMultiple("select 4"));
        Assert.That(await grid.ReadFirstAsync<int>(), Is.EqualTo(1), "the refused calls left the grid alone");
        await grid.DisposeAsync();

        Assert.That(await scope.QueryAsync<int>("select 3"), Is.EqualTo(new[] { 3 }));
        using (var second = scope.QueryMultiple("select 5; select 6"))
        {
            Assert.That(second.ReadSingle<int>(), Is.EqualTo(5));
            // Disposing before the last grid is read is fine: the rest is skipped.
        }

        Assert.That(scope.ExecuteScalar<int>("select 7"), Is.EqualTo(7));
    }

    [Test]
    public async Task A_disposed_grid_refuses_reads_and_may_be_disposed_again()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "grid");
        await using var db = ctx.Source.CreateConnection();
        var grid = await db.OnShard("s1").QueryMultipleAsync("select 1; select 2");
        grid.Dispose();

        Assert.ThrowsAsync<ObjectDisposedException>(async () => await grid.ReadAsync<int>());
        Assert.Throws<ObjectDisposedException>(() => grid.Read<int>());
        Assert.DoesNotThrow(grid.Dispose);
        Assert.DoesNotThrowAsync(async () => await grid.DisposeAsync());
        Assert.That(await db.OnShard("s1").ExecuteScalarAsync<int>("select 8"), Is.EqualTo(8), "a second dispose does not free someone else's operation");
    }

    [Test]
    public async Task Reading_past_the_last_result_set_is_Dapper_s_error()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "grid");
        await using var db = ctx.Source.CreateConnection();
        await using var grid = await db.OnShard("s2").QueryMultipleAsync("select 1");
        Assert.That(await grid.ReadSingleAsync<int>(), Is.EqualTo(1));

        Assert.That(grid.IsConsumed, Is.True);
        Assert.That(async () => await grid.ReadAsync<int>(), Throws.InstanceOf<InvalidOperationException>());
    }

    [Test]
    public async Task A_grid_whose_keys_span_shards_is_refused_and_leaves_the_connection_free()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, b => b.AddEntity<Order>(), stem: "grid");
        await using var db = ctx.Source.CreateConnection();
        var keys = Enumerable.Range(1, 20).Select(i => (long)i).ToArray();

        var error = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.QueryMultipleAsync($"select * from {ctx.Table} where customer_id = any(@CustomerId)", new { CustomerId = keys }));
        Assert.That(error!.Message, Does.Contain("QueryMultiple").And.Contain("ForKey"));
        Assert.Throws<ShardRoutingException>(() => db.QueryMultiple("select 1", new { Unknown = 1 }));

        Assert.That(await db.ForKey(1L).ExecuteScalarAsync<int>("select 1"), Is.EqualTo(1));
    }

    [Test]
    public async Task A_server_error_or_a_cancellation_frees_the_connection()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "grid");
        await using var db = ctx.Source.CreateConnection();
        var scope = db.OnShard("s3");

        var error = Assert.ThrowsAsync<PostgresException>(() => scope.QueryMultipleAsync("select * from no_such_table_grid; select 1"));
        Assert.That(error!.SqlState, Is.EqualTo(PostgresErrorCodes.UndefinedTable));
        Assert.That(error.Data["ShardKit.Shard"], Is.EqualTo("s3"));

        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        Assert.That(async () => await scope.QueryMultipleAsync(new CommandDefinition("select 1 from pg_sleep(10); select 2",
                cancellationToken: cancel.Token)),
            Throws.InstanceOf<OperationCanceledException>());

        await using var grid = await scope.QueryMultipleAsync("select 1; select 2");
        Assert.That(await grid.ReadSingleAsync<int>(), Is.EqualTo(1));
        Assert.That(await grid.ReadSingleAsync<int>(), Is.EqualTo(2));
    }
}

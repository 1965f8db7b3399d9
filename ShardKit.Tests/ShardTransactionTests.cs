using Dapper;

namespace ShardKit.Tests;

public sealed class ShardTransactionTests
{
    private const string Ddl = "create table {0} (customer_id bigint not null, id bigint not null)";

    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
        public long Id { get; init; }
    }

    private static long KeyOnAnotherShard(ShardedDataSource source, long key) =>
        Enumerable.Range(1, 1000).Select(i => (long)i).First(k => source.ShardFor(k) != source.ShardFor(key));

    [Test]
    public async Task Commit_makes_the_rows_visible_and_rollback_discards_them()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await using (var tx = await db.ForKey(5L).BeginTransactionAsync())
        {
            await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id)", new Row { CustomerId = 5, Id = 1 });
            await tx.CommitAsync();
        }

        await using (var tx = await db.ForKey(5L).BeginTransactionAsync())
        {
            await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id)", new Row { CustomerId = 5, Id = 2 });
            await tx.RollbackAsync();
        }

        await using (await db.ForKey(5L).BeginTransactionAsync())
        {
            await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id)", new Row { CustomerId = 5, Id = 3 });
            // disposed without commit
        }

        var ids = await ctx.DirectAsync<long>(ctx.Source.ShardFor(5L), $"select id from {ctx.Table} order by id");
        Assert.That(ids, Is.EqualTo(new long[] { 1 }));
    }

    [Test]
    public async Task A_command_for_another_shard_inside_a_transaction_throws_before_touching_any_database()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var other = KeyOnAnotherShard(ctx.Source, 5L);
        await using var tx = await db.ForKey(5L).BeginTransactionAsync();

        var error = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id)", new Row { CustomerId = other, Id = 1 }));
        Assert.That(error!.Message, Does.Contain(ctx.Source.ShardFor(other)).And.Contain(tx.Shard).And.Contain("distributed transaction"));
        Assert.ThrowsAsync<ShardRoutingException>(() => db.OnShard(ctx.Source.ShardFor(other)).ExecuteAsync("select 1"));
        Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id)", new[] { new Row { CustomerId = 5, Id = 1 }, new Row { CustomerId = other, Id = 2 } }));
        await tx.CommitAsync();

        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That((await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table}"))[0], Is.Zero, shard);
        }
    }

    [Test]
    public async Task Commands_without_a_key_inside_a_transaction_go_to_its_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await using var tx = await db.OnShard(ctx.Shards.Names[1]).BeginTransactionAsync();
        var port = await db.ExecuteScalarAsync<int>("select inet_server_port()");
        Assert.That(ctx.ShardOfPort(port), Is.EqualTo(ctx.Shards.Names[1]));
        Assert.That(await db.ExecuteScalarAsync<bool>("select now() = statement_timestamp()"), Is.False, "runs inside the transaction");
    }

    [Test]
    public async Task A_second_transaction_while_one_is_open_is_refused()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await using var tx = await db.ForKey(1L).BeginTransactionAsync();
        Assert.ThrowsAsync<InvalidOperationException>(() => db.ForKey(1L).BeginTransactionAsync());
    }

    public static readonly string[] ParameterShapes = ["anonymous", "dictionary", "dynamic"];

    /// <summary>The same key and id as an anonymous object, a dictionary or Dapper's DynamicParameters.</summary>
    internal static object Shaped(string shape, long customerId, long id) => shape switch
    {
        "anonymous" => new { CustomerId = customerId, Id = id },
        "dictionary" => new Dictionary<string, object> { ["CustomerId"] = customerId, ["Id"] = id },
        _ => Dynamic(customerId, id),
    };

    private static DynamicParameters Dynamic(long customerId, long id)
    {
        var p = new DynamicParameters();
        p.Add("CustomerId", customerId);
        p.Add("Id", id);
        return p;
    }

    [TestCaseSource(nameof(ParameterShapes))]
    public async Task An_untyped_command_naming_a_key_of_another_shard_inside_a_transaction_is_refused_and_writes_nothing(string shape)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var other = KeyOnAnotherShard(ctx.Source, 5L);
        // A typed read makes Row's key name known to the data source; no registration needed.
        await db.QueryAsync<Row>($"select * from {ctx.Table} where customer_id = @CustomerId", new { CustomerId = 5L });
        await using var tx = await db.ForKey(5L).BeginTransactionAsync();

        var write = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id)", Shaped(shape, other, 1)));
        Assert.That(write!.Message, Does.Contain($"'{ctx.Source.ShardFor(other)}'").And.Contain($"'{tx.Shard}'").And.Contain("distributed transaction"));
        Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.QueryAsync<long>($"select id from {ctx.Table} where customer_id = @CustomerId and id = @Id", Shaped(shape, other, 1)));
        Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.ExecuteScalarAsync<long>($"select count(*) from {ctx.Table} where customer_id = @CustomerId and id = @Id", Shaped(shape, other, 1)));
        Assert.Throws<ShardRoutingException>(() =>
            db.Execute($"insert into {ctx.Table} values (@CustomerId, @Id)", Shaped(shape, other, 2)));
        await tx.CommitAsync();

        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That((await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table}"))[0], Is.Zero, shard);
        }
    }

    [TestCaseSource(nameof(ParameterShapes))]
    public async Task An_untyped_command_naming_the_transactions_own_key_runs_inside_it(string shape)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await db.QueryAsync<Row>($"select * from {ctx.Table} where customer_id = @CustomerId", new { CustomerId = 5L });
        await using (var tx = await db.ForKey(5L).BeginTransactionAsync())
        {
            Assert.That(await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id)", Shaped(shape, 5, 1)), Is.EqualTo(1));
            Assert.That(await db.ExecuteScalarAsync<long>($"select count(*) from {ctx.Table} where customer_id = @CustomerId and id = @Id",
                Shaped(shape, 5, 1)), Is.EqualTo(1));
            await tx.RollbackAsync();
        }

        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That((await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table}"))[0], Is.Zero, shard);
        }
    }

    [TestCaseSource(nameof(ParameterShapes))]
    public async Task With_the_entity_registered_a_command_for_another_shard_is_refused_on_the_first_call(string shape)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, b => b.AddEntity<Row>());
        await using var db = ctx.Source.CreateConnection();
        var other = KeyOnAnotherShard(ctx.Source, 5L);
        await using var tx = await db.ForKey(5L).BeginTransactionAsync();

        Assert.ThrowsAsync<ShardRoutingException>(() => db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id)", Shaped(shape, other, 1)));
        Assert.ThrowsAsync<ShardRoutingException>(() => db.QueryAsync<dynamic>($"select * from {ctx.Table} where customer_id = @CustomerId", Shaped(shape, other, 1)));
        Assert.That(await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Id)", Shaped(shape, 5, 2)), Is.EqualTo(1));
        await tx.CommitAsync();

        foreach (var shard in ctx.Shards.Names)
        {
            var expected = shard == tx.Shard ? 1 : 0;
            Assert.That((await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table}"))[0], Is.EqualTo(expected), shard);
        }
    }
}

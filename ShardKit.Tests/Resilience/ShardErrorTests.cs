using Dapper;
using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Tests.Resilience;

/// <summary>
/// Errors name the shard they happened on: connection failures as <see cref="ShardConnectionException"/>, server
/// errors unchanged (users catch SqlState 23505) with the shard in <see cref="Exception.Data"/>.
/// </summary>
public sealed class ShardErrorTests
{
    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
    }

    private const long Key = 5;

    private static Task<ShardTestContext> CreateAsync(bool proxied = false) =>
        ShardTestContext.CreateAsync("create table {0} (customer_id bigint primary key)", b => b.UseRetries(ShardRetryOptions.None), proxied: proxied);

    private static DelayProxy ProxyOf(ShardTestContext ctx, string shard) => ctx.Proxies[ctx.Source.ShardNames.ToList().IndexOf(shard)];

    [Test]
    public async Task A_unique_violation_on_a_routed_write_stays_a_PostgresException_and_names_its_shard()
    {
        await using var ctx = await CreateAsync();
        await using var db = ctx.Source.CreateConnection();
        var insert = $"insert into {ctx.Table} values (@CustomerId)";
        await db.ExecuteAsync(insert, new Row { CustomerId = Key });

        var error = Assert.ThrowsAsync<PostgresException>(() => db.ExecuteAsync(insert, new Row { CustomerId = Key }));
        Assert.That(error!.SqlState, Is.EqualTo("23505"));
        Assert.That(error.Data[ShardKitException.ShardDataKey], Is.EqualTo(ctx.Source.ShardFor(Key)));

        var sync = Assert.Throws<PostgresException>(() => db.Execute(insert, new Row { CustomerId = Key }));
        Assert.That(sync!.Data[ShardKitException.ShardDataKey], Is.EqualTo(ctx.Source.ShardFor(Key)));
    }

    [Test]
    public async Task A_routed_read_of_a_cut_shard_throws_ShardConnectionException_naming_the_shard()
    {
        await using var ctx = await CreateAsync(proxied: true);
        await using var db = ctx.Source.CreateConnection();
        var shard = ctx.Source.ShardFor(Key);
        ProxyOf(ctx, shard).Cut();

        var error = Assert.ThrowsAsync<ShardConnectionException>(() => db.QueryAsync<long>($"select customer_id from {ctx.Table} where customer_id = @CustomerId", new Row { CustomerId = Key }));
        Assert.That(error!.Shard, Is.EqualTo(shard));
        Assert.That(error.Message, Does.StartWith($"Shard '{shard}' could not be reached"));
        Assert.That(error.Message, Does.Not.Contain("assword"));
        Assert.That(error.InnerException, Is.InstanceOf<NpgsqlException>());

        var sync = Assert.Throws<ShardConnectionException>(() => db.QuerySingle<long>("select @CustomerId::bigint", new Row { CustomerId = Key }));
        Assert.That(sync!.Shard, Is.EqualTo(shard));
    }

    [Test]
    public async Task An_unbuffered_routed_read_of_a_cut_shard_throws_ShardConnectionException_naming_the_shard()
    {
        await using var ctx = await CreateAsync(proxied: true);
        await using var db = ctx.Source.CreateConnection();
        var shard = ctx.Source.ShardFor(Key);
        ProxyOf(ctx, shard).Cut();

        var error = Assert.ThrowsAsync<ShardConnectionException>(async () =>
        {
            await foreach (var _ in db.QueryUnbufferedAsync<long>("select @CustomerId::bigint", new Row { CustomerId = Key }))
            {
            }
        });
        Assert.That(error!.Shard, Is.EqualTo(shard));
    }

    [Test]
    public async Task A_connection_that_breaks_during_a_routed_command_is_a_ShardConnectionException()
    {
        await using var ctx = await CreateAsync(proxied: true);
        await using var db = ctx.Source.CreateConnection();
        var shard = ctx.Source.ShardFor(Key);
        Assert.That(await db.QuerySingleAsync<long>("select @CustomerId::bigint", new Row { CustomerId = Key }), Is.EqualTo(Key));

        var running = db.QueryAsync<long>("select @CustomerId::bigint from pg_sleep(3)", new Row { CustomerId = Key });
        await Task.Delay(300);
        ProxyOf(ctx, shard).Cut();

        var error = Assert.ThrowsAsync<ShardConnectionException>(async () => await running);
        Assert.That(error!.Shard, Is.EqualTo(shard));
        Assert.That(error.InnerException, Is.InstanceOf<NpgsqlException>());
    }

    [Test]
    public async Task A_fan_out_lists_a_cut_shard_as_a_ShardConnectionException_naming_it()
    {
        await using var ctx = await CreateAsync(proxied: true);
        await using var db = ctx.Source.CreateConnection();
        ctx.Proxies[1].Cut();

        var result = await db.AllShards(new FanOutOptions { Policy = FanOutPolicy.PartialResults }).ExecuteAsync("select 1");

        var failure = result.Failures.Single();
        Assert.That(failure.Shard, Is.EqualTo("s1"));
        Assert.That(failure.Error, Is.InstanceOf<ShardConnectionException>());
        Assert.That(((ShardConnectionException)failure.Error).Shard, Is.EqualTo("s1"));
    }

    [Test]
    public async Task A_server_error_in_a_fan_out_stays_a_PostgresException_tagged_with_its_shard()
    {
        await using var ctx = await CreateAsync();
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ShardAggregateException>(() => db.AllShards().QueryAsync<int>("select 1 / 0", null, Merge.Concat<int>()));

        foreach (var failure in error!.Failures)
        {
            Assert.That(failure.Error, Is.InstanceOf<PostgresException>());
            Assert.That(failure.Error.Data[ShardKitException.ShardDataKey], Is.EqualTo(failure.Shard));
        }
    }
}

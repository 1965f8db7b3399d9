using Microsoft.Extensions.Time.Testing;
using Npgsql;

namespace ShardKit.Tests.Resilience;

public sealed class RetryAndBreakerTests
{
    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
    }

    private static readonly CircuitBreakerOptions RetriesOnly = new() { FailureThreshold = 1000 };

    private static async Task<ShardTestContext> ProxiedAsync(Action<ShardedDataSourceBuilder> configure) =>
        await ShardTestContext.CreateAsync("create table {0} (customer_id bigint)", configure, proxied: true);

    [Test]
    public async Task A_read_is_retried_through_a_cut_and_succeeds_once_the_shard_is_back()
    {
        await using var ctx = await ProxiedAsync(b => b
            .UseRetries(new ShardRetryOptions { MaxRetries = 5, BaseDelay = TimeSpan.FromMilliseconds(100) })
            .UseCircuitBreaker(RetriesOnly)); // these tests are about retries: a loaded machine must not trip the breaker
        await using var db = ctx.Source.CreateConnection();
        var shard = ctx.Source.ShardFor(1L);
        var proxy = ctx.Proxies[int.Parse(shard[1..], System.Globalization.CultureInfo.InvariantCulture)];
        Assert.That(await db.QuerySingleAsync<long>("select @CustomerId::bigint", new Row { CustomerId = 1 }), Is.EqualTo(1));

        proxy.Cut();
        var restore = Task.Delay(150).ContinueWith(_ => proxy.Restore(), TaskScheduler.Default);
        var value = await db.QuerySingleAsync<long>("select @CustomerId::bigint", new Row { CustomerId = 1 });
        await restore;

        Assert.That(value, Is.EqualTo(1));
    }

    [Test]
    public async Task A_write_is_not_retried_unless_marked_idempotent()
    {
        await using var ctx = await ProxiedAsync(b => b
            .UseRetries(new ShardRetryOptions { MaxRetries = 5, BaseDelay = TimeSpan.FromMilliseconds(100) })
            .UseCircuitBreaker(RetriesOnly)); // these tests are about retries: a loaded machine must not trip the breaker
        await using var db = ctx.Source.CreateConnection();
        var shard = ctx.Source.ShardFor(1L);
        var proxy = ctx.Proxies[int.Parse(shard[1..], System.Globalization.CultureInfo.InvariantCulture)];
        await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId)", new Row { CustomerId = 1 });

        proxy.Cut();
        var restore = Task.Delay(150).ContinueWith(_ => proxy.Restore(), TaskScheduler.Default);
        Assert.ThrowsAsync(Is.InstanceOf<ShardConnectionException>(), () => db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId)", new Row { CustomerId = 1 }));
        await restore;

        db.Retries = db.Retries with { RetryWrites = true };
        proxy.Cut();
        restore = Task.Delay(150).ContinueWith(_ => proxy.Restore(), TaskScheduler.Default);
        Assert.That(await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId)", new Row { CustomerId = 1 }), Is.EqualTo(1));
        await restore;
    }

    // insert … returning through Query is a write: a connection lost during it is not retried as a read would be (the
    // insert may have committed). The server ends its own connection in the middle of the statement; the sequence,
    // which no rollback takes back, counts the attempts.
    [TestCase(false)]
    [TestCase(true)]
    public async Task A_write_sent_through_Query_is_not_retried_as_a_read_would_be(bool sync)
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, attempt bigserial)", b => b
            .UseRetries(new ShardRetryOptions { MaxRetries = 3, BaseDelay = TimeSpan.FromMilliseconds(10) })
            .UseCircuitBreaker(RetriesOnly));
        await using var db = ctx.Source.CreateConnection();
        var sql = $"insert into {ctx.Table} (customer_id) values (@CustomerId) returning pg_terminate_backend(pg_backend_pid())";

        Assert.That(() => sync ? db.Query<bool>(sql, new Row { CustomerId = 1 }) : db.QueryAsync<bool>(sql, new Row { CustomerId = 1 }).GetAwaiter().GetResult(),
            Throws.InstanceOf<ShardKitException>().Or.InstanceOf<NpgsqlException>());

        var attempts = await ctx.DirectAsync<long>(ctx.Source.ShardFor(1L), $"select last_value from {ctx.Table}_attempt_seq");
        Assert.That(attempts.Single(), Is.EqualTo(1), "one attempt");
    }

    [Test]
    public async Task The_breaker_opens_fails_fast_probes_after_the_break_and_closes()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var ctx = await ProxiedAsync(b => b
            .UseRetries(ShardRetryOptions.None)
            .UseTimeProvider(time)
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 2, BreakDuration = TimeSpan.FromSeconds(30), ProbeInterval = TimeSpan.Zero }));
        await using var db = ctx.Source.CreateConnection();
        var proxy = ctx.Proxies[2];
        proxy.Cut();

        for (var i = 0; i < 2; i++)
        {
            Assert.ThrowsAsync(Is.InstanceOf<ShardConnectionException>(), () => db.OnShard("s2").ExecuteScalarAsync<int>("select 1"));
        }

        Assert.That(ctx.Source.GetCircuitState("s2"), Is.EqualTo(CircuitState.Open));
        var fast = Assert.ThrowsAsync<ShardUnavailableException>(() => db.OnShard("s2").ExecuteScalarAsync<int>("select 1"));
        Assert.That(fast!.Message, Does.Contain("'s2'"));

        var partial = await db.AllShards(new FanOutOptions { Policy = FanOutPolicy.PartialResults }).ExecuteAsync("select 1");
        Assert.That(partial.Failures.Single().Error, Is.InstanceOf<ShardUnavailableException>(), "an open shard is listed as failed at once");

        proxy.Restore();
        time.Advance(TimeSpan.FromSeconds(31));
        Assert.That(ctx.Source.GetCircuitState("s2"), Is.EqualTo(CircuitState.HalfOpen));
        Assert.That(await db.OnShard("s2").ExecuteScalarAsync<int>("select 1"), Is.EqualTo(1));
        Assert.That(ctx.Source.GetCircuitState("s2"), Is.EqualTo(CircuitState.Closed));
    }

    [Test]
    public async Task A_failed_probe_opens_the_breaker_again()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var ctx = await ProxiedAsync(b => b
            .UseRetries(ShardRetryOptions.None)
            .UseTimeProvider(time)
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1, BreakDuration = TimeSpan.FromSeconds(10), ProbeInterval = TimeSpan.Zero }));
        await using var db = ctx.Source.CreateConnection();
        ctx.Proxies[0].Cut();
        Assert.ThrowsAsync(Is.InstanceOf<ShardConnectionException>(), () => db.OnShard("s0").ExecuteScalarAsync<int>("select 1"));
        time.Advance(TimeSpan.FromSeconds(11));
        Assert.ThrowsAsync(Is.InstanceOf<ShardConnectionException>(), () => db.OnShard("s0").ExecuteScalarAsync<int>("select 1"));
        Assert.That(ctx.Source.GetCircuitState("s0"), Is.EqualTo(CircuitState.Open));
        ctx.Proxies[0].Restore();
    }

    [Test]
    public async Task Sql_errors_do_not_count_against_the_breaker()
    {
        await using var ctx = await ProxiedAsync(b => b.UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1 }));
        await using var db = ctx.Source.CreateConnection();
        Assert.ThrowsAsync<PostgresException>(() => db.OnShard("s1").ExecuteAsync("select * from no_such_table"));
        Assert.That(ctx.Source.GetCircuitState("s1"), Is.EqualTo(CircuitState.Closed));
    }

    [Test]
    public async Task A_probe_that_a_fan_out_stops_early_still_closes_the_breaker()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint)", b => b
            .UseRetries(ShardRetryOptions.None).UseTimeProvider(time)
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1, BreakDuration = TimeSpan.FromSeconds(10), ProbeInterval = TimeSpan.Zero }), proxied: true);
        await using var db = ctx.Source.CreateConnection();
        ctx.Proxies[0].Cut();
        Assert.ThrowsAsync(Is.InstanceOf<ShardConnectionException>(), () => db.OnShard("s0").ExecuteScalarAsync<int>("select 1"));
        ctx.Proxies[0].Restore();
        time.Advance(TimeSpan.FromSeconds(11));

        var page = await db.AllShards().QueryAsync("select generate_series(1, 1000)", null, Merge.OrderBy<int, int>(g => g).Take(5));

        Assert.That(page, Has.Count.EqualTo(5));
        Assert.That(ctx.Source.GetCircuitState("s0"), Is.EqualTo(CircuitState.Closed));
        Assert.DoesNotThrowAsync(() => db.OnShard("s0").ExecuteScalarAsync<int>("select 1"));
    }
}

using Npgsql;

namespace ShardKit.Tests.Resilience;

/// <summary>What the one per-shard pipeline gives every path: fan-out reads retried, and the real failure reported.</summary>
public sealed class PipelineTests
{
    private static async Task<ShardTestContext> ProxiedAsync(Action<ShardedDataSourceBuilder> configure) =>
        await ShardTestContext.CreateAsync("create table {0} (customer_id bigint)", configure, proxied: true);

    [TestCase(false)]
    [TestCase(true)]
    public async Task A_fan_out_read_whose_connection_died_is_retried_and_complete(bool unbuffered)
    {
        await using var ctx = await ProxiedAsync(b => b
            .UseRetries(new ShardRetryOptions { MaxRetries = 2, BaseDelay = TimeSpan.FromMilliseconds(20) })
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1000 }));
        await using var db = ctx.Source.CreateConnection();
        await db.AllShards().ExecuteAsync("select 1"); // every shard's connection is open and kept by the connection
        var pid = await db.OnShard("s1").ExecuteScalarAsync<int>("select pg_backend_pid()");
        await ctx.DirectAsync<bool>("s1", $"select pg_terminate_backend({pid})");

        var sql = "select g from generate_series(1, 10) g";
        var rows = unbuffered
            ? await db.AllShards().QueryUnbufferedAsync<int>(sql, null, Merge.Concat<int>()).ToListAsync()
            : (await db.AllShards().QueryAsync<int>(sql, null, Merge.Concat<int>())).ToList();

        Assert.That(rows, Has.Count.EqualTo(10 * ctx.Shards.Count), "the shard whose connection died was read on a fresh one");
    }

    [Test]
    public async Task Retries_that_open_the_breaker_report_the_connection_failure_not_the_breaker()
    {
        await using var ctx = await ProxiedAsync(b => b
            .UseRetries(new ShardRetryOptions { MaxRetries = 4, BaseDelay = TimeSpan.FromMilliseconds(10) })
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 2, ProbeInterval = TimeSpan.Zero }));
        await using var db = ctx.Source.CreateConnection();
        var shard = ctx.Source.ShardFor(5L);
        ctx.Proxies[int.Parse(shard[1..], System.Globalization.CultureInfo.InvariantCulture)].Cut();

        var error = Assert.ThrowsAsync<ShardConnectionException>(() =>
            db.ForKey(5L).QuerySingleAsync<long>("select 5::bigint"));

        Assert.That(error!.Shard, Is.EqualTo(shard));
        Assert.That(error.InnerException, Is.InstanceOf<NpgsqlException>());
        Assert.That(ctx.Source.GetCircuitState(shard), Is.EqualTo(CircuitState.Open), "the retries did open the breaker");
        // The next call is refused by the breaker itself, at once.
        Assert.ThrowsAsync<ShardUnavailableException>(() => db.ForKey(5L).QuerySingleAsync<long>("select 5::bigint"));
    }

    [Test]
    public async Task A_pinned_transaction_is_never_retried_and_its_lost_connection_is_named()
    {
        await using var ctx = await ProxiedAsync(b => b
            .UseRetries(new ShardRetryOptions { MaxRetries = 3, BaseDelay = TimeSpan.FromMilliseconds(10) })
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1000 }));
        await using var db = ctx.Source.CreateConnection();
        var shard = ctx.Source.ShardFor(9L);
        await using var tx = await db.ForKey(9L).BeginTransactionAsync();
        var pid = await db.ExecuteScalarAsync<int>("select pg_backend_pid()", new { CustomerId = 9L });
        await ctx.DirectAsync<bool>(shard, $"select pg_terminate_backend({pid})");

        Assert.ThrowsAsync(Is.InstanceOf<ShardKitException>().Or.InstanceOf<NpgsqlException>(),
            () => db.ExecuteScalarAsync<int>("select 1", new { CustomerId = 9L }));
        // A retry would have opened a fresh connection outside the transaction; instead the loss is reported.
        var again = Assert.ThrowsAsync<ShardRoutingException>(() => db.ExecuteScalarAsync<int>("select 1", new { CustomerId = 9L }));
        Assert.That(again!.Message, Does.Contain("was lost inside its transaction"));
    }
}

using Npgsql;

namespace ShardKit.Tests.Resilience;

/// <summary>A command timeout is the slow query's failure, not the shard's: it is neither retried nor counted by the breaker.</summary>
public sealed class CommandTimeoutTests
{
    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
    }

    [Test]
    public async Task Command_timeouts_are_not_retried_and_leave_the_breaker_of_a_healthy_shard_closed()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint); create sequence {0}_attempts", b => b
            .UseRetries(new ShardRetryOptions { MaxRetries = 2, BaseDelay = TimeSpan.FromMilliseconds(10) })
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 2, BreakDuration = TimeSpan.FromMinutes(10) }));
        await using var db = ctx.Source.CreateConnection();
        const long key = 3;
        var shard = ctx.Source.ShardFor(key);

        for (var i = 0; i < 3; i++)
        {
            var error = Assert.ThrowsAsync<NpgsqlException>(() => db.QueryAsync<long>(
                $"select nextval('{ctx.Table}_attempts'), pg_sleep(3) where @CustomerId > 0", new Row { CustomerId = key }, commandTimeout: 1));
            Assert.That(error!.InnerException, Is.InstanceOf<TimeoutException>(), "a timeout keeps its type: it is not a connection failure");
            Assert.That(error.Data[ShardKitException.ShardDataKey], Is.EqualTo(shard));
        }

        Assert.That(ctx.Source.GetCircuitState(shard), Is.EqualTo(CircuitState.Closed));
        Assert.That(await db.QuerySingleAsync<long>("select @CustomerId::bigint", new Row { CustomerId = key }), Is.EqualTo(key));
        Assert.That(await db.AllShards().ExecuteScalarAsync("select 1::bigint", Merge.Sum<long>()), Is.EqualTo(ctx.Source.ShardNames.Count));
        var attempts = await ctx.DirectAsync<long>(shard, $"select last_value from {ctx.Table}_attempts");
        Assert.That(attempts.Single(), Is.EqualTo(3), "one attempt per call: a timeout is not retried");
    }
}

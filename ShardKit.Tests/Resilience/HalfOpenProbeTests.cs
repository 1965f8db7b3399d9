using Microsoft.Extensions.Time.Testing;

namespace ShardKit.Tests.Resilience;

/// <summary>
/// The first command after a break is the breaker's probe. Whatever that command does (reads to the end, stops after
/// one row, is cancelled), it must settle the probe, or every later command on the shard fails fast for good.
/// </summary>
public sealed class HalfOpenProbeTests
{
    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
    }

    [Test]
    public async Task An_unbuffered_read_to_the_end_as_the_probe_closes_the_breaker()
    {
        await using var half = await HalfOpenAsync();

        var rows = new List<long>();
        await foreach (var row in half.Db.QueryUnbufferedAsync<long>("select @CustomerId::bigint from generate_series(1, 3)", new Row { CustomerId = half.Key }))
        {
            rows.Add(row);
        }

        Assert.That(rows, Has.Count.EqualTo(3));
        Assert.That(half.Ctx.Source.GetCircuitState(half.Shard), Is.EqualTo(CircuitState.Closed));
        Assert.That(await half.ReadAsync(), Is.EqualTo(half.Key));
    }

    [Test]
    public async Task An_unbuffered_read_stopped_after_one_row_as_the_probe_closes_the_breaker()
    {
        await using var half = await HalfOpenAsync();

        await foreach (var row in half.Db.QueryUnbufferedAsync<long>("select @CustomerId::bigint from generate_series(1, 3)", new Row { CustomerId = half.Key }))
        {
            Assert.That(row, Is.EqualTo(half.Key));
            break;
        }

        Assert.That(half.Ctx.Source.GetCircuitState(half.Shard), Is.EqualTo(CircuitState.Closed));
        Assert.That(await half.ReadAsync(), Is.EqualTo(half.Key));
    }

    [Test]
    public async Task An_unbuffered_read_disposed_before_its_first_row_releases_the_probe()
    {
        await using var half = await HalfOpenAsync();

        var rows = half.Db.QueryUnbufferedAsync<long>("select @CustomerId::bigint", new Row { CustomerId = half.Key }).GetAsyncEnumerator();
        await rows.DisposeAsync();

        Assert.That(await half.ReadAsync(), Is.EqualTo(half.Key));
        Assert.That(half.Ctx.Source.GetCircuitState(half.Shard), Is.EqualTo(CircuitState.Closed));
    }

    [Test]
    public async Task A_routed_query_the_caller_cancels_as_the_probe_releases_it()
    {
        await using var half = await HalfOpenAsync();

        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var command = new Dapper.CommandDefinition("select @CustomerId::bigint from pg_sleep(30)", new Row { CustomerId = half.Key },
            cancellationToken: cancel.Token);
        Assert.ThrowsAsync(Is.InstanceOf<OperationCanceledException>(), () => half.Db.QueryAsync<long>(command));

        Assert.That(await half.ReadAsync(), Is.EqualTo(half.Key));
        Assert.That(half.Ctx.Source.GetCircuitState(half.Shard), Is.EqualTo(CircuitState.Closed));
    }

    [Test]
    public async Task A_routed_query_cancelled_before_it_starts_as_the_probe_releases_it()
    {
        await using var half = await HalfOpenAsync();

        var command = new Dapper.CommandDefinition("select @CustomerId::bigint", new Row { CustomerId = half.Key },
            cancellationToken: new CancellationToken(canceled: true));
        Assert.ThrowsAsync(Is.InstanceOf<OperationCanceledException>(), () => half.Db.QueryAsync<long>(command));

        Assert.That(await half.ReadAsync(), Is.EqualTo(half.Key));
    }

    [Test]
    public async Task A_probe_that_fails_with_a_sql_error_releases_it_and_the_breaker_stays_half_open()
    {
        await using var half = await HalfOpenAsync();

        Assert.ThrowsAsync<Npgsql.PostgresException>(() => half.Db.QueryAsync<long>("select * from no_such_table where 1 = @CustomerId",
            new Row { CustomerId = half.Key }));

        Assert.That(half.Ctx.Source.GetCircuitState(half.Shard), Is.EqualTo(CircuitState.HalfOpen));
        Assert.That(await half.ReadAsync(), Is.EqualTo(half.Key));
        Assert.That(half.Ctx.Source.GetCircuitState(half.Shard), Is.EqualTo(CircuitState.Closed));
    }

    [Test]
    public async Task A_fan_out_that_fails_fast_on_an_open_shard_does_not_release_another_callers_probe()
    {
        await using var half = await HalfOpenAsync();
        var index = half.Ctx.Source.ShardNames.ToList().IndexOf(half.Shard);
        half.Ctx.Proxies[index].OneWayDelay = TimeSpan.FromMilliseconds(500); // keeps the probe in flight

        var probe = half.ReadAsync();
        await Task.Delay(100);
        await using var other = half.Ctx.Source.CreateConnection(); // another caller: one connection runs one operation
        var partial = await other.AllShards(new FanOutOptions { Policy = FanOutPolicy.PartialResults }).ExecuteAsync("select 1");
        Assert.That(partial.Failures.Single().Error, Is.InstanceOf<ShardUnavailableException>());
        Assert.ThrowsAsync<ShardUnavailableException>(() => other.OnShard(half.Shard).ExecuteScalarAsync<int>("select 1"),
            "the probe still runs: a second caller fails fast");

        Assert.That(await probe, Is.EqualTo(half.Key));
        Assert.That(half.Ctx.Source.GetCircuitState(half.Shard), Is.EqualTo(CircuitState.Closed));
    }

    // A shard whose breaker opened while it was cut, that is back, and whose break is over: the next command probes.
    private static async Task<HalfOpen> HalfOpenAsync()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint)", b => b
            .UseRetries(ShardRetryOptions.None)
            .UseTimeProvider(time)
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1, BreakDuration = TimeSpan.FromSeconds(10), ProbeInterval = TimeSpan.Zero }), proxied: true);
        var db = ctx.Source.CreateConnection();
        const long key = 7;
        var shard = ctx.Source.ShardFor(key);
        var proxy = ctx.Proxies[ctx.Source.ShardNames.ToList().IndexOf(shard)];
        proxy.Cut();
        Assert.That(() => db.OnShard(shard).ExecuteScalarAsync<int>("select 1"), Throws.Exception);
        Assert.That(ctx.Source.GetCircuitState(shard), Is.EqualTo(CircuitState.Open));
        proxy.Restore();
        time.Advance(TimeSpan.FromSeconds(11));
        Assert.That(ctx.Source.GetCircuitState(shard), Is.EqualTo(CircuitState.HalfOpen));
        return new HalfOpen(ctx, db, shard, key);
    }

    private sealed record HalfOpen(ShardTestContext Ctx, ShardedConnection Db, string Shard, long Key) : IAsyncDisposable
    {
        public async Task<long> ReadAsync() =>
            await Db.QuerySingleAsync<long>("select @CustomerId::bigint", new Row { CustomerId = Key });

        public async ValueTask DisposeAsync()
        {
            await Db.DisposeAsync();
            await Ctx.DisposeAsync();
        }
    }
}

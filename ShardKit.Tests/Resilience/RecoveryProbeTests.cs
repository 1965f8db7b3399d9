using System.Diagnostics;
using Microsoft.Extensions.Time.Testing;

namespace ShardKit.Tests.Resilience;

/// <summary>
/// While a shard's breaker is open, a background probe tries it; the shard serves again as soon as it answers, long
/// before the break would end, and commands keep failing fast while it is down.
/// </summary>
public sealed class RecoveryProbeTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Test]
    public async Task A_shard_that_returns_serves_again_long_before_its_break_ends()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint)", b => b
            .UseRetries(ShardRetryOptions.None)
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 2, BreakDuration = TimeSpan.FromMinutes(10) }), proxied: true);
        await using var db = ctx.Source.CreateConnection();
        ctx.Proxies[2].Cut();
        await OpenBreakerAsync(ctx, db, "s2");

        await Task.Delay(TimeSpan.FromSeconds(1.5)); // several probes fail meanwhile
        Assert.That(ctx.Source.GetCircuitState("s2"), Is.EqualTo(CircuitState.Open));
        Assert.ThrowsAsync<ShardUnavailableException>(() => db.OnShard("s2").ExecuteScalarAsync<int>("select 1"), "fail fast while down");

        ctx.Proxies[2].Restore();
        var answer = await PollAsync(async () =>
        {
            try
            {
                return await db.OnShard("s2").ExecuteScalarAsync<int>("select 1");
            }
            catch (ShardUnavailableException)
            {
                return (int?)null;
            }
        });

        Assert.That(answer, Is.EqualTo(1));
        Assert.That(ctx.Source.GetCircuitState("s2"), Is.EqualTo(CircuitState.Closed));
    }

    [Test]
    public async Task The_probe_runs_on_the_time_provider_and_closes_the_breaker_when_the_shard_answers()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint)", b => b
            .UseRetries(ShardRetryOptions.None).UseTimeProvider(time)
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1, BreakDuration = TimeSpan.FromMinutes(10), ProbeInterval = TimeSpan.FromSeconds(1) }),
            proxied: true);
        await using var db = ctx.Source.CreateConnection();
        ctx.Proxies[0].Cut();
        await OpenBreakerAsync(ctx, db, "s0");

        for (var i = 0; i < 5; i++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(50);
        }

        Assert.That(ctx.Source.GetCircuitState("s0"), Is.EqualTo(CircuitState.Open), "probes of a cut shard fail");

        ctx.Proxies[0].Restore();
        Assert.That(await PollAsync(() =>
        {
            time.Advance(TimeSpan.FromSeconds(1));
            return Task.FromResult(ctx.Source.GetCircuitState("s0") == CircuitState.Closed ? (bool?)true : null);
        }), Is.True);
        Assert.That(time.GetUtcNow() - time.Start, Is.LessThan(TimeSpan.FromMinutes(10)), "closed by the probe, not by the end of the break");
        Assert.That(await db.OnShard("s0").ExecuteScalarAsync<int>("select 1"), Is.EqualTo(1));
    }

    [Test]
    public async Task Without_a_probe_interval_the_breaker_stays_open_until_a_command_probes_after_the_break()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint)", b => b
            .UseRetries(ShardRetryOptions.None).UseTimeProvider(time)
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1, BreakDuration = TimeSpan.FromMinutes(1), ProbeInterval = TimeSpan.Zero }),
            proxied: true);
        await using var db = ctx.Source.CreateConnection();
        ctx.Proxies[0].Cut();
        await OpenBreakerAsync(ctx, db, "s0");
        ctx.Proxies[0].Restore();

        for (var i = 0; i < 5; i++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(50);
        }

        Assert.That(ctx.Source.GetCircuitState("s0"), Is.EqualTo(CircuitState.Open));
    }

    [Test]
    public async Task Disposing_the_data_source_stops_a_running_probe()
    {
        var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint)", b => b
            .UseRetries(ShardRetryOptions.None)
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1, ProbeInterval = TimeSpan.FromMilliseconds(50) }), proxied: true);
        await using (var db = ctx.Source.CreateConnection())
        {
            ctx.Proxies[3].Cut();
            await OpenBreakerAsync(ctx, db, "s3");
            await Task.Delay(300);
        }

        var dispose = ctx.Source.DisposeAsync().AsTask();
        Assert.That(await Task.WhenAny(dispose, Task.Delay(Patience)), Is.SameAs(dispose), "dispose waits for the probe, which stops");
        await ctx.DisposeAsync();
    }

    private static async Task OpenBreakerAsync(ShardTestContext ctx, ShardedConnection db, string shard)
    {
        while (ctx.Source.GetCircuitState(shard) == CircuitState.Closed)
        {
            Assert.ThrowsAsync<ShardConnectionException>(() => db.OnShard(shard).ExecuteScalarAsync<int>("select 1"));
        }

        Assert.That(ctx.Source.GetCircuitState(shard), Is.EqualTo(CircuitState.Open));
    }

    // Calls until it returns a value; fails after a generous while (the machine may be busy).
    private static async Task<T?> PollAsync<T>(Func<Task<T?>> attempt)
        where T : struct
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < Patience)
        {
            if (await attempt() is { } value)
            {
                return value;
            }

            await Task.Delay(100);
        }

        Assert.Fail($"Still no answer after {Patience.TotalSeconds} s.");
        return null;
    }
}

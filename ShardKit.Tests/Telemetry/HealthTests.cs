using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace ShardKit.Tests.Telemetry;

public sealed class HealthTests
{
    [Test]
    public async Task Health_reports_every_shard_reachable_primary_with_its_round_trip()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (x int)");
        var health = await ctx.Source.CheckHealthAsync();
        Assert.That(health.Select(h => h.Shard), Is.EqualTo(ctx.Shards.Names));
        Assert.That(health, Has.All.Matches<ShardHealth>(h => h.IsReachable && !h.IsStandby && h.RoundTrip > TimeSpan.Zero && h.Circuit == CircuitState.Closed));
        var result = await new ShardHealthCheck(ctx.Source).CheckHealthAsync(new HealthCheckContext());
        Assert.That(result.Status, Is.EqualTo(HealthStatus.Healthy));
    }

    [Test]
    public async Task A_cut_shard_is_reported_down_and_the_check_degraded()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (x int)", proxied: true);
        ctx.Proxies[1].Cut();
        var health = await ctx.Source.CheckHealthAsync();
        Assert.That(health.Single(h => !h.IsReachable).Shard, Is.EqualTo("s1"));
        Assert.That(health.Single(h => !h.IsReachable).Error, Is.Not.Empty);
        var result = await new ShardHealthCheck(ctx.Source).CheckHealthAsync(new HealthCheckContext());
        Assert.That(result.Status, Is.EqualTo(HealthStatus.Degraded));
        ctx.Proxies[1].Restore();
    }
}

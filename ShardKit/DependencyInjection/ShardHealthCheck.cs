using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace ShardKit;

/// <summary>
/// Adapts <see cref="ShardedDataSource.CheckHealthAsync"/> to Microsoft.Extensions.Diagnostics.HealthChecks:
/// healthy when every shard answers as a primary, degraded when some do, unhealthy when none does. Register with
/// <c>services.AddHealthChecks().AddCheck&lt;ShardHealthCheck&gt;("shards")</c>.
/// </summary>
public sealed class ShardHealthCheck(ShardedDataSource dataSource) : IHealthCheck
{
    /// <inheritdoc />
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var shards = await dataSource.CheckHealthAsync(cancellationToken).ConfigureAwait(false);
        var data = shards.ToDictionary(s => s.Shard, s => (object)(s.IsReachable
            ? $"up{(s.IsStandby ? " (standby)" : "")}, {s.RoundTrip!.Value.TotalMilliseconds:0.0} ms, {s.PendingPreparedTransactions} prepared"
            : $"down: {s.Error}"));
        var healthy = shards.Count(s => s.IsReachable && !s.IsStandby);
        return healthy == shards.Count ? HealthCheckResult.Healthy($"{healthy} shards up", data)
            : healthy > 0 ? HealthCheckResult.Degraded($"{shards.Count - healthy} of {shards.Count} shards unavailable or standby", data: data)
            : HealthCheckResult.Unhealthy("No shard is available", data: data);
    }
}

using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace ShardKit;

/// <summary>
/// Adapts <see cref="ShardedDataSource.CheckHealthAsync"/> to Microsoft.Extensions.Diagnostics.HealthChecks:
/// healthy when every shard answers as a primary and every standby as a standby, degraded when some shard does not or
/// a standby is down or promoted, unhealthy when no shard answers as a primary. Each standby is listed by name. Register with
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
        foreach (var standby in shards.SelectMany(s => s.Standbys))
        {
            data[standby.Name] = standby.IsReachable
                ? $"up{(standby.IsStandby ? "" : " (promoted: no longer a standby)")}, {standby.RoundTrip!.Value.TotalMilliseconds:0.0} ms, " +
                  (standby.LagBytes is { } lag ? $"{lag} bytes behind" : "lag unknown")
                : $"down: {standby.Error}";
        }

        var healthy = shards.Count(s => s.IsReachable && !s.IsStandby);
        var standbysDown = shards.SelectMany(s => s.Standbys).Count(s => !s.IsReachable || !s.IsStandby);
        return healthy == shards.Count && standbysDown == 0 ? HealthCheckResult.Healthy($"{healthy} shards up", data)
            : healthy == shards.Count ? HealthCheckResult.Degraded($"{healthy} shards up; {standbysDown} standbys down or promoted", data: data)
            : healthy > 0 ? HealthCheckResult.Degraded($"{shards.Count - healthy} of {shards.Count} shards unavailable or standby", data: data)
            : HealthCheckResult.Unhealthy("No shard is available", data: data);
    }
}

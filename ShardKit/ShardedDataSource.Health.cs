namespace ShardKit;

public sealed partial class ShardedDataSource
{
    /// <summary>
    /// Probes every shard in parallel: reachability, round-trip time, primary or standby, ShardKit prepared
    /// transactions pending, the circuit breaker's state, and each of its standbys (reachable, still in recovery, lag
    /// at the last background check). Never throws for a sick shard or standby; it reports it.
    /// </summary>
    public async Task<IReadOnlyList<ShardHealth>> CheckHealthAsync(CancellationToken cancellationToken = default)
    {
        return await Task.WhenAll(Map.Shards.Select(async shard =>
        {
            var standbys = Task.WhenAll(Shards.ReplicasAt(shard.Index).Standbys.Select(standby => ShardHealthProbe.ProbeStandbyAsync(
                standby.Info, standby.DataSource, standby.Status.LagBytes, standby.Status.LagTime, cancellationToken)));
            var health = await ShardHealthProbe.ProbeAsync(shard, Shards.DataSourceAt(shard.Index),
                () => Shards.BreakerAt(shard.Index).State, GlobalTransactionId.Prefix, cancellationToken).ConfigureAwait(false);
            return health with { Standbys = await standbys.ConfigureAwait(false) };
        })).ConfigureAwait(false);
    }
}

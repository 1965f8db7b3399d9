namespace ShardKit;

public sealed partial class ShardedDataSource
{
    /// <summary>
    /// Probes every shard in parallel: reachability, round-trip time, primary or standby, ShardKit prepared
    /// transactions pending, and the circuit breaker's state. Never throws for a sick shard; it reports it.
    /// </summary>
    public async Task<IReadOnlyList<ShardHealth>> CheckHealthAsync(CancellationToken cancellationToken = default)
    {
        return await Task.WhenAll(Map.Shards.Select(shard => ShardHealthProbe.ProbeAsync(shard, Shards.DataSourceAt(shard.Index),
            () => Shards.BreakerAt(shard.Index).State, GlobalTransactionId.Prefix, cancellationToken))).ConfigureAwait(false);
    }
}

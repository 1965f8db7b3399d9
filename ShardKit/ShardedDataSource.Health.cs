using System.Diagnostics;
using Npgsql;

namespace ShardKit;

public sealed partial class ShardedDataSource
{
    /// <summary>
    /// Probes every shard in parallel: reachability, round-trip time, primary or standby, ShardKit prepared
    /// transactions pending, and the circuit breaker's state. Never throws for a sick shard; it reports it.
    /// </summary>
    public async Task<IReadOnlyList<ShardHealth>> CheckHealthAsync(CancellationToken cancellationToken = default)
    {
        return await Task.WhenAll(Map.Shards.Select(shard => ProbeAsync(shard, cancellationToken))).ConfigureAwait(false);
    }

    private async Task<ShardHealth> ProbeAsync(ShardInfo shard, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var connection = await _dataSources[shard.Index].OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await using var _ = connection.ConfigureAwait(false);
            var command = new NpgsqlCommand(
                "select pg_is_in_recovery(), (select count(*) from pg_prepared_xacts where gid like '" + GlobalTransactionId.Prefix + "%')", connection);
            await using var __ = command.ConfigureAwait(false);
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using var ___ = reader.ConfigureAwait(false);
            await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            return new ShardHealth
            {
                Shard = shard.Name,
                IsReachable = true,
                RoundTrip = Stopwatch.GetElapsedTime(started),
                IsStandby = reader.GetBoolean(0),
                PendingPreparedTransactions = reader.GetInt64(1),
                Circuit = _breakers[shard.Index].State,
            };
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException or IOException or System.Net.Sockets.SocketException)
        {
            return new ShardHealth
            {
                Shard = shard.Name,
                Circuit = _breakers[shard.Index].State,
                Error = e.GetType().Name + ": " + ConnectionStrings.Redact(e.Message, shard.ConnectionString),
            };
        }
    }
}

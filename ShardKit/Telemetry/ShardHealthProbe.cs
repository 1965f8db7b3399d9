using System.Diagnostics;
using Npgsql;

namespace ShardKit;

/// <summary>One shard's health: reachability, round trip, primary or standby, prepared transactions pending, breaker state.</summary>
internal static class ShardHealthProbe
{
    public static async Task<ShardHealth> ProbeAsync(ShardInfo shard, NpgsqlDataSource source, Func<CircuitState> circuit,
        string preparedPrefix, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var connection = await source.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await using var _ = connection.ConfigureAwait(false);
            var command = new NpgsqlCommand(
                "select pg_is_in_recovery(), (select count(*) from pg_prepared_xacts where gid like '" + preparedPrefix + "%')", connection);
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
                Circuit = circuit(),
            };
        }
        catch (Exception e) when (ShardErrors.FromShard(e))
        {
            return new ShardHealth
            {
                Shard = shard.Name,
                Circuit = circuit(),
                Error = e.GetType().Name + ": " + ConnectionStrings.Redact(e.Message, shard.ConnectionString),
            };
        }
    }

    /// <summary>One standby: reachability, round trip, still in recovery; the lag comes from the last background check.</summary>
    public static async Task<StandbyHealth> ProbeStandbyAsync(StandbyInfo standby, NpgsqlDataSource source, long? lagBytes, TimeSpan? lagTime,
        CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var connection = await source.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await using var _ = connection.ConfigureAwait(false);
            var command = new NpgsqlCommand("select pg_is_in_recovery()", connection);
            await using var __ = command.ConfigureAwait(false);
            var inRecovery = (bool)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
            return new StandbyHealth
            {
                Name = standby.Name,
                IsReachable = true,
                RoundTrip = Stopwatch.GetElapsedTime(started),
                IsStandby = inRecovery,
                LagBytes = lagBytes,
                LagTime = lagTime,
            };
        }
        catch (Exception e) when (ShardErrors.FromShard(e))
        {
            return new StandbyHealth { Name = standby.Name, Error = e.GetType().Name + ": " + ConnectionStrings.Redact(e.Message, standby.ConnectionString) };
        }
    }
}

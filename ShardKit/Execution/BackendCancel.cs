using System.Collections.Concurrent;
using Npgsql;

namespace ShardKit;

/// <summary>
/// Cancels a query by its backend's id from a second connection to the same server: the way to stop a query whose own
/// cancel request PostgreSQL dropped (one that reached the backend before it had read the query). Best effort.
/// </summary>
internal static class BackendCancel
{
    // Whether a connection string multiplexes, by string: a multiplexed connection has no backend of its own, and asking
    // it for one throws, which would cost every command of such a data source an exception.
    private static readonly ConcurrentDictionary<string, bool> Multiplexed = new();

    /// <summary>The backend id of an open connection, or 0 when it has none to give (not open, or multiplexed).</summary>
    public static int IdOf(NpgsqlConnection connection)
    {
        if (connection.State != System.Data.ConnectionState.Open
            || Multiplexed.GetOrAdd(connection.ConnectionString, static cs => new NpgsqlConnectionStringBuilder(cs).Multiplexing))
        {
            return 0;
        }

        try
        {
            return connection.ProcessID;
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException)
        {
            return 0;
        }
    }

    /// <summary>
    /// Sends <c>pg_cancel_backend(<paramref name="processId"/>)</c> on <paramref name="server"/> of
    /// <paramref name="shard"/> (a standby's backend ids mean nothing on its primary, and the reverse), giving up after
    /// <paramref name="within"/>. Only for a backend that still runs this caller's query: its connection is held until
    /// this returns, or broke (the backend runs on until it next writes to its client).
    /// </summary>
    public static async Task SendAsync(ShardSet shards, int shard, ShardServer server, int processId, TimeSpan within)
    {
        if (processId == 0)
        {
            return;
        }

        try
        {
            using var timeout = new CancellationTokenSource(within);
            var side = await shards.DataSourceAt(shard, server).OpenConnectionAsync(timeout.Token).ConfigureAwait(false);
            await using (side.ConfigureAwait(false))
            {
                var command = new NpgsqlCommand("select pg_cancel_backend($1)", side) { Parameters = { new() { Value = processId } } };
                await using (command.ConfigureAwait(false))
                {
                    await command.ExecuteScalarAsync(timeout.Token).ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Best effort: the query then runs to its end on the server (client_connection_check_interval stops it there).
        }
    }
}

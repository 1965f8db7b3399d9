using Npgsql;

namespace ShardKit.Tests.Harness;

/// <summary>
/// A streaming standby of one server of a <see cref="LocalPostgresCluster"/>: copied with <c>pg_basebackup -R -X stream</c>
/// through a physical replication slot of its own, started with the cluster's settings (<c>hot_standby</c> is on by
/// default), in the cluster's folder. Tests stop it, pause and resume its replay, or promote it; disposing it stops it,
/// drops its slot on the primary (when the primary still answers) and removes its folder.
/// </summary>
internal sealed class LocalStandby : IAsyncDisposable
{
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(120);
    private readonly LocalPostgresCluster _cluster;
    private readonly string _primary;
    private readonly string _name;
    private readonly string _dataDir;
    private int _disposed;

    private LocalStandby(LocalPostgresCluster cluster, string primary, string name, string dataDir, int port)
    {
        _cluster = cluster;
        _primary = primary;
        _name = name;
        _dataDir = dataDir;
        Port = port;
    }

    public int Port { get; }

    public string SlotName => _name.Replace('-', '_');

    public string ConnectionString => LocalPostgresCluster.ConnectionStringFor(Port);

    /// <summary>Copies server <paramref name="primaryIndex"/> of <paramref name="cluster"/> and starts the copy as its standby.</summary>
    public static async Task<LocalStandby> StartAsync(LocalPostgresCluster cluster, int primaryIndex, string name)
    {
        var primary = LocalPostgresCluster.ConnectionStringFor(cluster.PortOf(primaryIndex));
        var dataDir = Path.Combine(cluster.Root, name);
        var basebackup = cluster.Binaries.Program("pg_basebackup");
        var (code, output) = await ProcessRunner.RunAsync(basebackup,
            ["-D", dataDir, "-d", $"host=127.0.0.1 port={cluster.PortOf(primaryIndex)} user=postgres", "-X", "stream", "-R",
             "-C", "-S", name.Replace('-', '_'), "-c", "fast", "--no-sync"],
            asPostgresUser: true, CommandTimeout);
        if (code != 0)
        {
            throw new InvalidOperationException($"pg_basebackup could not copy local shard {primaryIndex} for standby {name} (exit {code}):\n{output}");
        }

        Exception? last = null;
        for (var attempt = 0; attempt < 4; attempt++)
        {
            var port = FreePort.Next();
            (code, output) = await cluster.PgCtlStartAsync(name, dataDir, port);
            if (code == 0)
            {
                return new LocalStandby(cluster, primary, name, dataDir, port);
            }

            last = new InvalidOperationException($"pg_ctl could not start standby {name} on port {port} (exit {code}):\n{output}");
        }

        throw last!;
    }

    /// <summary>Stops replaying WAL: the standby keeps answering reads with what it had (<c>pg_wal_replay_pause()</c>).</summary>
    public Task PauseReplayAsync() => ExecuteAsync("select pg_wal_replay_pause()");

    /// <summary>Replays again from where it paused (<c>pg_wal_replay_resume()</c>).</summary>
    public async Task ResumeReplayAsync()
    {
        try
        {
            await ExecuteAsync("select pg_wal_replay_resume()");
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.SerializationFailure)
        {
            // Replay resumed at once and removed row versions this very statement's snapshot could see: the server
            // cancels the statement ("conflict with recovery"), but replay runs again all the same.
        }
    }

    /// <summary>Waits until the standby has replayed everything the primary has written so far.</summary>
    public async Task CatchUpAsync()
    {
        await using var primary = new NpgsqlConnection(_primary);
        await primary.OpenAsync();
        await using var position = new NpgsqlCommand("select pg_current_wal_insert_lsn()::text", primary);
        var target = (string)(await position.ExecuteScalarAsync())!;
        await using var standby = new NpgsqlConnection(ConnectionString);
        await standby.OpenAsync();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            await using var replayed = new NpgsqlCommand($"select pg_last_wal_replay_lsn() >= '{target}'::pg_lsn", standby);
            if ((bool)(await replayed.ExecuteScalarAsync())!)
            {
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Standby {_name} did not replay up to {target} within 60 s.");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>Stops the standby hard (<c>pg_ctl stop -m immediate</c>).</summary>
    public async Task StopAsync()
    {
        var (code, output) = await ProcessRunner.RunAsync(_cluster.Binaries.PgCtl,
            ["stop", "-D", _dataDir, "-m", "immediate", "-w", "-t", "20"], asPostgresUser: true, CommandTimeout);
        if (code != 0)
        {
            throw new InvalidOperationException($"pg_ctl could not stop standby {_name} (exit {code}):\n{output}");
        }
    }

    /// <summary>Makes the standby a primary (<c>pg_ctl promote</c>, waiting until it accepts writes).</summary>
    public async Task PromoteAsync()
    {
        var (code, output) = await ProcessRunner.RunAsync(_cluster.Binaries.PgCtl,
            ["promote", "-D", _dataDir, "-w", "-t", "60"], asPostgresUser: true, CommandTimeout);
        if (code != 0)
        {
            throw new InvalidOperationException($"pg_ctl could not promote standby {_name} (exit {code}):\n{output}");
        }
    }

    private async Task ExecuteAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        await ProcessRunner.RunAsync(_cluster.Binaries.PgCtl, ["stop", "-D", _dataDir, "-m", "immediate", "-w", "-t", "20"],
            asPostgresUser: true, CommandTimeout);
        try
        {
            await using var primary = new NpgsqlConnection(_primary + ";Timeout=3");
            await primary.OpenAsync();
            await using var drop = new NpgsqlCommand(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = @slot", primary);
            drop.Parameters.AddWithValue("slot", SlotName);
            await drop.ExecuteNonQueryAsync();
        }
        catch (NpgsqlException)
        {
            // The primary is stopped (a failover test): its folder goes with the cluster, slot and all.
        }

        try
        {
            Directory.Delete(_dataDir, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Removed with the cluster's folder at the latest.
        }
    }
}

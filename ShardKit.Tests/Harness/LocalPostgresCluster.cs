using System.Diagnostics;
using System.Globalization;

namespace ShardKit.Tests.Harness;

/// <summary>
/// PostgreSQL servers started from the machine's own <c>initdb</c>/<c>pg_ctl</c>, one per shard, on free loopback
/// ports under one temporary folder. Created and started in parallel; stopped and removed on dispose; folders left
/// by a run that died are cleaned by the next start.
/// </summary>
internal sealed class LocalPostgresCluster : IAsyncDisposable
{
    private const string FolderPrefix = "shardkit-pg-";
    private const string OwnerFile = "owner.pid";
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(60);

    private readonly PostgresBinaries _binaries;
    private readonly string _root;
    private readonly string[] _extraSettings;
    private readonly List<(string DataDir, int Port)> _servers = [];
    private int _disposed;

    private LocalPostgresCluster(PostgresBinaries binaries, string root, string[] extraSettings)
    {
        _binaries = binaries;
        _root = root;
        _extraSettings = extraSettings;
    }

    /// <summary>The server programs this cluster runs with (standbys use the same ones).</summary>
    public PostgresBinaries Binaries => _binaries;

    /// <summary>The cluster's folder: standbys keep their data here too, so a stray one is removed with it.</summary>
    public string Root => _root;

    public int PortOf(int index) => _servers[index].Port;

    public IReadOnlyList<string> ConnectionStrings =>
        _servers.Select(s => ConnectionStringFor(s.Port)).ToArray();

    public static string ConnectionStringFor(int port) =>
        $"Host=127.0.0.1;Port={port};Username=postgres;Database=postgres;Include Error Detail=true";

    /// <summary>Starts <paramref name="count"/> servers; <paramref name="extraSettings"/> (<c>name=value</c>) override the defaults.</summary>
    public static async Task<LocalPostgresCluster> StartAsync(PostgresBinaries binaries, int count, params string[] extraSettings)
    {
        CleanFoldersOfDeadRuns();

        var root = Path.Combine(Path.GetTempPath(), FolderPrefix + Environment.ProcessId.ToString(CultureInfo.InvariantCulture)
            + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        // Owner first, so a concurrent start's cleanup sees at once that this folder is alive.
        await File.WriteAllTextAsync(Path.Combine(root, OwnerFile), Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
        // The servers run as the postgres user when we are root: it must be able to create its data folders here.
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(root, (UnixFileMode)0b111_111_111);
        }

        var cluster = new LocalPostgresCluster(binaries, root, extraSettings);
        try
        {
            var started = await Task.WhenAll(Enumerable.Range(0, count).Select(i => cluster.StartServerAsync($"s{i}")));
            cluster._servers.AddRange(started);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    private async Task<(string, int)> StartServerAsync(string name)
    {
        var dataDir = Path.Combine(_root, name);
        var (code, output) = await ProcessRunner.RunAsync(_binaries.InitDb,
            ["-D", dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            asPostgresUser: true, CommandTimeout);
        if (code != 0)
        {
            throw new InvalidOperationException($"initdb failed for local shard {name} (exit {code}):\n{output}");
        }

        // Another process may take a port between our probe and the server's bind: retry on a fresh one.
        Exception? last = null;
        for (var attempt = 0; attempt < 4; attempt++)
        {
            var port = FreePort.Next();
            (code, output) = await PgCtlStartAsync(name, dataDir, port);
            if (code == 0)
            {
                return (dataDir, port);
            }

            var log = File.Exists(Path.Combine(_root, name + ".log")) ? File.ReadAllText(Path.Combine(_root, name + ".log")) : "";
            last = new InvalidOperationException($"pg_ctl could not start local shard {name} on port {port} (exit {code}):\n{output}\n{log}");
        }

        throw last!;
    }

    /// <summary>Starts a server on <paramref name="dataDir"/> with the cluster's settings (a standby needs at least the primary's).</summary>
    public Task<(int, string)> PgCtlStartAsync(string name, string dataDir, int port)
    {
        var options = string.Join(' ', new[]
        {
            $"-p {port}",
            "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=''",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
            "-c max_prepared_transactions=100",
            "-c shared_buffers=32MB",
            "-c max_wal_size=1GB",
            // Moving buckets between shards streams changes through logical replication slots.
            "-c wal_level=logical",
            "-c max_replication_slots=20",
            "-c max_wal_senders=20",
            "-c log_min_messages=warning",
        }.Concat(_extraSettings.Select(setting => "-c " + setting)));
        return ProcessRunner.RunAsync(_binaries.PgCtl,
            ["start", "-D", dataDir, "-w", "-t", "60", "-l", Path.Combine(_root, name + ".log"), "-o", options],
            asPostgresUser: true, CommandTimeout);
    }

    /// <summary>Stops server <paramref name="index"/> hard (<c>pg_ctl stop -m immediate</c>, like a power cut).</summary>
    public async Task StopAsync(int index)
    {
        var (code, output) = await ProcessRunner.RunAsync(_binaries.PgCtl,
            ["stop", "-D", _servers[index].DataDir, "-m", "immediate", "-w", "-t", "20"], asPostgresUser: true, CommandTimeout);
        if (code != 0)
        {
            throw new InvalidOperationException($"pg_ctl could not stop local shard {index} (exit {code}):\n{output}");
        }
    }

    /// <summary>Starts server <paramref name="index"/> again on its port after <see cref="StopAsync"/> (crash recovery runs).</summary>
    public async Task RestartAsync(int index)
    {
        var (dataDir, port) = _servers[index];
        var (code, output) = await PgCtlStartAsync(Path.GetFileName(dataDir), dataDir, port);
        if (code != 0)
        {
            throw new InvalidOperationException($"pg_ctl could not restart local shard {index} on port {port} (exit {code}):\n{output}");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        await Task.WhenAll(_servers.Select(s => ProcessRunner.RunAsync(_binaries.PgCtl,
            ["stop", "-D", s.DataDir, "-m", "immediate", "-w", "-t", "20"], asPostgresUser: true, CommandTimeout)));
        StopStrayServers(_root);
        TryDelete(_root);
    }

    /// <summary>Synchronous stop for <see cref="AppDomain.ProcessExit"/>, where awaiting is not possible.</summary>
    public void StopNow() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private static void CleanFoldersOfDeadRuns()
    {
        foreach (var folder in Directory.EnumerateDirectories(Path.GetTempPath(), FolderPrefix + "*"))
        {
            // The folder name carries its owner's pid too: a folder another start just created has no owner file yet.
            var ownerPath = Path.Combine(folder, OwnerFile);
            var namedOwner = Path.GetFileName(folder)[FolderPrefix.Length..].Split('-')[0];
            if ((File.Exists(ownerPath)
                 && int.TryParse(File.ReadAllText(ownerPath).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var owner)
                 && IsAlive(owner))
                || (int.TryParse(namedOwner, NumberStyles.Integer, CultureInfo.InvariantCulture, out var named) && IsAlive(named)))
            {
                continue;
            }

            StopStrayServers(folder);
            TryDelete(folder);
        }
    }

    private static void StopStrayServers(string root)
    {
        if (!Directory.Exists(root))
        {
            return;
        }

        foreach (var pidFile in Directory.EnumerateFiles(root, "postmaster.pid", SearchOption.AllDirectories))
        {
            try
            {
                var firstLine = File.ReadLines(pidFile).FirstOrDefault();
                if (int.TryParse(firstLine, NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid) && IsAlive(pid))
                {
                    using var postmaster = Process.GetProcessById(pid);
                    postmaster.Kill(entireProcessTree: true);
                    postmaster.WaitForExit(5000);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException
                                          or System.ComponentModel.Win32Exception)
            {
                // Already gone, or not ours to stop: the folder removal below is best effort too.
            }
        }
    }

    private static bool IsAlive(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static void TryDelete(string folder)
    {
        for (var attempt = 0; attempt < 3; attempt++)
        {
            try
            {
                Directory.Delete(folder, recursive: true);
                return;
            }
            catch (DirectoryNotFoundException)
            {
                return;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Thread.Sleep(100);
            }
        }
    }
}

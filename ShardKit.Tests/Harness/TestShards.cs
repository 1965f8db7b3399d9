using System.Globalization;

namespace ShardKit.Tests.Harness;

/// <summary>
/// The one way tests and benchmarks get real PostgreSQL shards, tried in this order:
/// <c>SHARDKIT_TEST_SHARDS</c> (connection strings separated by <c>|</c>), Testcontainers when a Docker engine answers,
/// local servers from the machine's <c>initdb</c>/<c>pg_ctl</c>. Started once per process and shared by every caller.
/// </summary>
public static class TestShards
{
    /// <summary>Environment variable with connection strings separated by <c>|</c>.</summary>
    public const string ShardsVariable = "SHARDKIT_TEST_SHARDS";

    /// <summary>Environment variable with the number of local or container shards to start (default 4).</summary>
    public const string CountVariable = "SHARDKIT_TEST_SHARD_COUNT";

    private static readonly Lock Gate = new();
    private static Task<TestShardSet>? _starting;
    private static IAsyncDisposable? _owned;
    private static int _startCount;

    /// <summary>How many times servers were actually provisioned in this process (a second start reuses them).</summary>
    public static int ProvisionCount => Volatile.Read(ref _startCount);

    /// <summary>The shards of this run, provisioning them on the first call.</summary>
    public static Task<TestShardSet> GetAsync()
    {
        lock (Gate)
        {
            // A failed start is not cached: the next caller tries again and sees its own error.
            if (_starting is null || _starting.IsFaulted || _starting.IsCanceled)
            {
                _starting = ProvisionAsync();
            }

            return _starting;
        }
    }

    /// <summary>Stops and removes whatever this process started. Safe to call more than once.</summary>
    public static async Task ShutdownAsync()
    {
        IAsyncDisposable? owned;
        lock (Gate)
        {
            owned = _owned;
            _owned = null;
            _starting = null;
        }

        if (owned is not null)
        {
            await owned.DisposeAsync();
        }
    }

    private static async Task<TestShardSet> ProvisionAsync()
    {
        var fromEnvironment = Environment.GetEnvironmentVariable(ShardsVariable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            var list = fromEnvironment.Split('|', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            return new TestShardSet(ShardSource.Environment, list);
        }

        var count = RequestedCount();
        Interlocked.Increment(ref _startCount);
        if (await DockerProbe.EngineAnswersAsync())
        {
            var containers = await ContainerShards.StartAsync(count);
            Own(containers);
            return new TestShardSet(ShardSource.Containers, containers.ConnectionStrings);
        }

        var binaries = PostgresBinaries.Find() ?? throw new ShardHarnessUnavailableException(
            "No PostgreSQL shards for tests: set SHARDKIT_TEST_SHARDS to connection strings separated by '|', " +
            "or start a Docker engine, or install the PostgreSQL server binaries (Debian: apt-get install -y postgresql; " +
            "initdb and pg_ctl are looked up on PATH, under /usr/lib/postgresql/*/bin, or in SHARDKIT_PG_BIN).");
        var cluster = await LocalPostgresCluster.StartAsync(binaries, count);
        Own(cluster);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => cluster.StopNow();
        return new TestShardSet(ShardSource.LocalServers, cluster.ConnectionStrings);
    }

    private static void Own(IAsyncDisposable resource)
    {
        lock (Gate)
        {
            _owned = resource;
        }
    }

    private static int RequestedCount()
    {
        var text = Environment.GetEnvironmentVariable(CountVariable);
        return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n is > 0 and <= 16 ? n : 4;
    }
}

using Dapper;
using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Tests.Distributed;

/// <summary>
/// Real servers under shard names no other test uses (recovery only decides transactions whose coordinator is one of
/// its own shards, so parallel tests never settle each other's), modulo placement so key k lands on shard k mod n, an
/// optional delay proxy per shard for cutting connections, and direct access to check each server's truth.
/// </summary>
internal sealed class DistributedShards : IAsyncDisposable
{
    public const string Ddl = "create table if not exists {0} (customer_id bigint not null, id bigint not null)";

    private readonly bool _ownsResources;

    private DistributedShards(IReadOnlyList<string> direct, string[] names, string table, IReadOnlyList<DelayProxy> proxies, bool ownsResources,
        ShardedDataSource source)
    {
        Direct = direct;
        Names = names;
        Table = table;
        Proxies = proxies;
        _ownsResources = ownsResources;
        Source = source;
    }

    /// <summary>The servers' own connection strings (never through a proxy).</summary>
    public IReadOnlyList<string> Direct { get; }

    public string[] Names { get; }

    public string Table { get; }

    public IReadOnlyList<DelayProxy> Proxies { get; }

    public ShardedDataSource Source { get; }

    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
        public long Id { get; init; }
    }

    /// <summary>The run's shared servers under fresh names, with a fresh table.</summary>
    public static async Task<DistributedShards> SharedAsync(int count, Action<DistributedTransactionOptions>? options = null, bool proxied = false)
    {
        var shards = await Shards.GetAsync();
        if (shards.Count < count)
        {
            Assert.Ignore($"This test needs {count} shards; the run has {shards.Count}.");
        }

        var direct = shards.ConnectionStrings.Take(count).ToArray();
        var proxies = proxied ? direct.Select(cs => DelayProxy.Start(cs, TimeSpan.Zero)).ToArray() : [];
        var result = Create(direct, UniqueNames(count), Tests.Shards.UniqueTable("dtx"), proxies, ownsResources: true, options);
        await result.OnEveryShardAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, Ddl, result.Table));
        return result;
    }

    /// <summary>A data source over given servers and names; the table must exist already.</summary>
    public static DistributedShards Create(IReadOnlyList<string> direct, string[] names, string table, IReadOnlyList<DelayProxy> proxies,
        bool ownsResources, Action<DistributedTransactionOptions>? options)
    {
        var builder = new ShardedDataSourceBuilder().UseModuloSharding();
        for (var i = 0; i < direct.Count; i++)
        {
            var cs = proxies.Count > 0 ? proxies[i].Rewrite(direct[i]) + ";Timeout=5;Cancellation Timeout=1000" : direct[i];
            builder.AddShard(names[i], cs);
        }

        if (options is not null)
        {
            builder.UseDistributedTransactions(options);
        }

        return new DistributedShards(direct, names, table, proxies, ownsResources, builder.Build());
    }

    public static string[] UniqueNames(int count)
    {
        var stem = "d" + Guid.NewGuid().ToString("N")[..8];
        return Enumerable.Range(0, count).Select(i => $"{stem}_{i}").ToArray();
    }

    /// <summary>A key that modulo placement puts on shard <paramref name="shard"/>.</summary>
    public long KeyOn(int shard, int nth = 0) => shard + (long)nth * Names.Length;

    /// <summary>
    /// Holds every commit at <paramref name="step"/>: <c>Paused</c> completes when one arrives there, and the commit goes
    /// on once <c>Resume</c> is set.
    /// </summary>
    public (TaskCompletionSource Paused, TaskCompletionSource Resume) PauseAt(DistributedStep step)
    {
        var paused = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var resume = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Source.OnDistributedStep = async (at, _) =>
        {
            if (at == step)
            {
                paused.TrySetResult();
                await resume.Task;
            }
        };
        return (paused, resume);
    }

    public async Task OnEveryShardAsync(string sql)
    {
        foreach (var cs in Direct)
        {
            await using var conn = await OpenDirectAsync(cs);
            await conn.ExecuteAsync(sql);
        }
    }

    /// <summary>Rows of this table on each shard, read directly.</summary>
    public async Task<long[]> CountsAsync(string where = "true")
    {
        var counts = new long[Direct.Count];
        for (var i = 0; i < Direct.Count; i++)
        {
            await using var conn = await OpenDirectAsync(Direct[i]);
            counts[i] = await conn.ExecuteScalarAsync<long>($"select count(*) from {Table} where {where}");
        }

        return counts;
    }

    /// <summary>Prepared transactions coordinated by these shards, on every server, as shard:gid.</summary>
    public async Task<List<string>> PreparedAsync()
    {
        var found = new List<string>();
        for (var i = 0; i < Direct.Count; i++)
        {
            await using var conn = await OpenDirectAsync(Direct[i]);
            var gids = await conn.QueryAsync<string>("select gid from pg_prepared_xacts where gid like any(@Patterns)",
                new { Patterns = Names.Select(n => $"shardkit:{n}:%").ToArray() });
            found.AddRange(gids.Select(g => $"{Names[i]}:{g}"));
        }

        return found;
    }

    /// <summary>Decision rows of these shards' transactions on server <paramref name="coordinator"/>.</summary>
    public async Task<List<(string Gid, string Outcome)>> DecisionsAsync(int coordinator = 0)
    {
        await using var conn = await OpenDirectAsync(Direct[coordinator]);
        var exists = await conn.ExecuteScalarAsync<bool>("select to_regclass('shardkit_2pc_decisions') is not null");
        if (!exists)
        {
            return [];
        }

        var rows = await conn.QueryAsync<(string, string)>("select gid, outcome from shardkit_2pc_decisions where gid like any(@Patterns)",
            new { Patterns = Names.Select(n => $"shardkit:{n}:%").ToArray() });
        return rows.ToList();
    }

    /// <summary>The pg_stat_activity state of backend <paramref name="pid"/> on shard <paramref name="shard"/>; null once it ended.</summary>
    public async Task<string?> SessionStateAsync(int shard, int pid)
    {
        await using var conn = await OpenDirectAsync(Direct[shard]);
        return await conn.ExecuteScalarAsync<string?>("select state from pg_stat_activity where pid = @Pid", new { Pid = pid });
    }

    // Unpooled: a pooled connection would outlive a server the fault trials stop and restart.
    private static async Task<NpgsqlConnection> OpenDirectAsync(string connectionString)
    {
        var conn = new NpgsqlConnection(connectionString + ";Pooling=false");
        await conn.OpenAsync();
        return conn;
    }

    public async Task RollBackLeftoversAsync()
    {
        foreach (var entry in await PreparedAsync())
        {
            var shard = Array.FindIndex(Names, n => entry.StartsWith(n + ":", StringComparison.Ordinal));
            await using var conn = await OpenDirectAsync(Direct[shard]);
            await conn.ExecuteAsync($"rollback prepared '{entry[(Names[shard].Length + 1)..]}'");
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Source.DisposeAsync();
        if (_ownsResources)
        {
            foreach (var proxy in Proxies)
            {
                await proxy.DisposeAsync();
            }

            // A failed test may leave its transactions prepared; they would hold locks on the shared servers.
            await RollBackLeftoversAsync();
            await OnEveryShardAsync($"drop table if exists {Table}");
        }
    }
}

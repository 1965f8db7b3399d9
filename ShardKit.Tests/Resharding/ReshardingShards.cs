using Dapper;
using Npgsql;

namespace ShardKit.Tests.Resharding;

/// <summary>An item whose rows move with their buckets: the key is the primary key.</summary>
public sealed class Item
{
    [ShardKey] public long Id { get; init; }

    public string? Payload { get; init; }

    public int N { get; init; }
}

/// <summary>
/// Real shards for one resharding test: a database of its own on each test server (its own catalog, fences, slots),
/// so tests run in parallel; dropped with its replication slots at the end. Shard s0 holds the catalog.
/// </summary>
internal sealed class ReshardingShards : IAsyncDisposable
{
    public const string Table = "items";
    private readonly IReadOnlyList<string> _servers;
    private readonly List<ShardedDataSource> _sources = [];

    private ReshardingShards(IReadOnlyList<string> servers, string database, IReadOnlyList<string> direct)
    {
        _servers = servers;
        Database = database;
        Direct = direct;
    }

    public string Database { get; }

    /// <summary>What every data source of this test logged.</summary>
    public ShardKit.Tests.Migrations.LogCapture Logs { get; } = new();

    /// <summary>One connection string per shard, to this test's database.</summary>
    public IReadOnlyList<string> Direct { get; }

    public static async Task<ReshardingShards> CreateAsync(int count, int buckets = 64)
    {
        var shards = await Shards.GetAsync();
        Assume.That(shards.Count, Is.GreaterThanOrEqualTo(count), $"needs {count} shards");
        return await CreateOnAsync(shards.ConnectionStrings.Take(count).ToArray(), buckets);
    }

    /// <summary>The same over servers of the test's own (which it may stop and start).</summary>
    public static async Task<ReshardingShards> CreateOnAsync(IReadOnlyList<string> servers, int buckets = 64)
    {
        var database = "rs_" + Guid.NewGuid().ToString("N")[..12];
        await Task.WhenAll(servers.Select(async cs =>
        {
            await using var admin = new NpgsqlConnection(cs);
            await admin.OpenAsync();
            await admin.ExecuteAsync($"create database {database}");
        }));
        var direct = servers.Select(cs => new NpgsqlConnectionStringBuilder(cs) { Database = database }.ConnectionString).ToArray();
        await Task.WhenAll(direct.Select(async cs =>
        {
            await using var conn = new NpgsqlConnection(cs);
            await conn.OpenAsync();
            await conn.ExecuteAsync($"create table {Table} (id bigint primary key, payload text, n int not null default 0)");
        }));
        var set = new ReshardingShards(servers, database, direct) { Buckets = buckets };
        return set;
    }

    public int Buckets { get; private init; }

    /// <summary>A data source over the first <paramref name="take"/> shards (all by default) following the stored map on s0.</summary>
    public ShardedDataSource NewSource(int? take = null, Action<StoredMapOptions>? configure = null, bool stored = true,
        Action<ShardedDataSourceBuilder>? more = null, bool errorDetail = true, IReadOnlyList<string>? standbys = null)
    {
        var builder = new ShardedDataSourceBuilder().UseHashSharding(Buckets).AddEntity<Item>().UseLoggerFactory(Logs);
        more?.Invoke(builder);
        for (var i = 0; i < (take ?? Direct.Count); i++)
        {
            // The harness's strings include the server's error details; an app's usually do not (Npgsql's default).
            var primary = errorDetail ? Direct[i] : new NpgsqlConnectionStringBuilder(Direct[i]) { IncludeErrorDetail = false }.ConnectionString;
            if (standbys is null)
            {
                builder.AddShard($"s{i}", primary);
            }
            else
            {
                // A standby of the shard's server, in this test's database.
                builder.AddShard($"s{i}", primary, new NpgsqlConnectionStringBuilder(standbys[i]) { Database = Database }.ConnectionString);
            }
        }

        if (stored)
        {
            // Quick checks, so that a move's default waits for followers (twice the check interval) stay short here.
            builder.UseStoredMap("s0", o =>
            {
                o.CheckInterval = TimeSpan.FromMilliseconds(250);
                configure?.Invoke(o);
            });
        }

        var source = builder.Build();
        _sources.Add(source);
        return source;
    }

    public async Task<NpgsqlConnection> OpenAsync(int shard)
    {
        var conn = new NpgsqlConnection(Direct[shard]);
        await conn.OpenAsync();
        return conn;
    }

    public async Task<T> ScalarAsync<T>(int shard, string sql, object? param = null)
    {
        await using var conn = await OpenAsync(shard);
        return (await conn.ExecuteScalarAsync<T>(sql, param))!;
    }

    /// <summary>Every item row on every shard, with the shard it is on.</summary>
    public async Task<List<(int Shard, long Id, string? Payload, int N)>> AllRowsAsync()
    {
        var rows = new List<(int, long, string?, int)>();
        for (var s = 0; s < Direct.Count; s++)
        {
            await using var conn = await OpenAsync(s);
            rows.AddRange((await conn.QueryAsync<(long, string?, int)>($"select id, payload, n from {Table}")).Select(r => (s, r.Item1, r.Item2, r.Item3)));
        }

        return rows;
    }

    /// <summary>Replication slots and publications this test's database still has on any server.</summary>
    public async Task<int> LeftoversAsync()
    {
        var total = 0;
        for (var s = 0; s < Direct.Count; s++)
        {
            await using var conn = await OpenAsync(s);
            total += await conn.ExecuteScalarAsync<int>(
                "select (select count(*) from pg_replication_slots where database = current_database())::int + (select count(*) from pg_publication)::int");
        }

        return total;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var source in _sources)
        {
            await source.DisposeAsync();
        }

        NpgsqlConnection.ClearAllPools();
        await Task.WhenAll(_servers.Select(async cs =>
        {
            await using var admin = new NpgsqlConnection(cs);
            await admin.OpenAsync();
            await admin.ExecuteAsync(
                "select pg_terminate_backend(active_pid) from pg_replication_slots where database = @d and active_pid is not null", new { d = Database });
            await admin.ExecuteAsync("select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = @d", new { d = Database });
            // A test that failed midway may leave a distributed transaction prepared; it would keep the database.
            foreach (var gid in await admin.QueryAsync<string>("select gid from pg_prepared_xacts where database = @d", new { d = Database }))
            {
                await using var inDatabase = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(cs) { Database = Database }.ConnectionString);
                await inDatabase.OpenAsync();
                await inDatabase.ExecuteAsync($"rollback prepared '{gid.Replace("'", "''", StringComparison.Ordinal)}'");
            }

            // Dropping a database waits for a checkpoint, which takes its time on a loaded machine.
            await admin.ExecuteAsync($"drop database if exists {Database} with (force)", commandTimeout: 300);
        }));
    }
}

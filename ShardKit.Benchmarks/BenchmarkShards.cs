using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Benchmarks;

/// <summary>Real shards for a benchmark: the test harness's servers, optionally behind delay proxies.</summary>
internal sealed class BenchmarkShards : IAsyncDisposable
{
    private readonly List<DelayProxy> _proxies = [];

    private BenchmarkShards(ShardedDataSource source, IReadOnlyList<string> connectionStrings)
    {
        Source = source;
        ConnectionStrings = connectionStrings;
    }

    public ShardedDataSource Source { get; }

    /// <summary>The connection strings ShardKit uses (through the proxies when there are any).</summary>
    public IReadOnlyList<string> ConnectionStrings { get; }

    /// <param name="count">The number of shards.</param>
    /// <param name="delay">A one-way delay added by a proxy in front of each shard.</param>
    /// <param name="configure">More builder settings.</param>
    /// <param name="shareServers">
    /// Allows more shards than servers: shard i then uses server i mod n (same database), which suits fan-out reads
    /// that only measure the cost of talking to many shards, each through its own proxy and connection.
    /// </param>
    /// <param name="databasePrefix">
    /// Gives each shard a database of its own, <c>{prefix}_{i}</c> on server i mod n (created when missing), so more shards
    /// than servers still have separate schemas, as migrations need.
    /// </param>
    public static async Task<BenchmarkShards> StartAsync(int count = 4, TimeSpan delay = default, Action<ShardedDataSourceBuilder>? configure = null,
        bool shareServers = false, string? databasePrefix = null)
    {
        Dapper.DefaultTypeMap.MatchNamesWithUnderscores = true;
        var shards = await TestShards.GetAsync();
        if (shards.Count < count && !shareServers && databasePrefix is null)
        {
            throw new InvalidOperationException($"The benchmark needs {count} shards; set SHARDKIT_TEST_SHARD_COUNT={count}.");
        }

        var builder = new ShardedDataSourceBuilder();
        var proxies = new List<DelayProxy>();
        var strings = new List<string>();
        for (var i = 0; i < count; i++)
        {
            var cs = shards.ConnectionStrings[i % shards.Count];
            if (databasePrefix is not null)
            {
                cs = await DatabaseAsync(cs, $"{databasePrefix}_{i}");
            }

            if (delay > TimeSpan.Zero)
            {
                var proxy = DelayProxy.Start(cs, delay);
                proxies.Add(proxy);
                cs = proxy.Rewrite(cs);
            }

            strings.Add(cs);
            builder.AddShard($"s{i}", cs);
        }

        configure?.Invoke(builder);
        var result = new BenchmarkShards(builder.Build(), strings);
        result._proxies.AddRange(proxies);
        return result;
    }

    private static async Task<string> DatabaseAsync(string server, string database)
    {
        await using (var conn = new NpgsqlConnection(server))
        {
            await conn.OpenAsync();
            await using var exists = new NpgsqlCommand("select exists (select 1 from pg_database where datname = $1)", conn) { Parameters = { new() { Value = database } } };
            if (!(bool)(await exists.ExecuteScalarAsync())!)
            {
                await using var create = new NpgsqlCommand($"create database \"{database}\"", conn);
                await create.ExecuteNonQueryAsync();
            }
        }

        return new NpgsqlConnectionStringBuilder(server) { Database = database }.ConnectionString;
    }

    public async Task OnEveryShardAsync(string sql)
    {
        foreach (var cs in ConnectionStrings)
        {
            await using var conn = new NpgsqlConnection(cs);
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand(sql, conn);
            await cmd.ExecuteNonQueryAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Source.DisposeAsync();
        foreach (var proxy in _proxies)
        {
            await proxy.DisposeAsync();
        }
    }
}

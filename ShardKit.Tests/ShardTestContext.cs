using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Tests;

/// <summary>
/// Real shards for one test: a <see cref="ShardedDataSource"/> over the run's servers, a table of its own on every
/// shard, and direct per-shard access to check where rows really landed.
/// </summary>
internal sealed class ShardTestContext : IAsyncDisposable
{
    private ShardTestContext(TestShardSet shards, ShardedDataSource source, string table, IReadOnlyList<DelayProxy> proxies)
    {
        Shards = shards;
        Source = source;
        Table = table;
        Proxies = proxies;
    }

    /// <summary>One proxy per shard when the context was created with <c>proxied: true</c>; the data source goes through them.</summary>
    public IReadOnlyList<DelayProxy> Proxies { get; }

    public TestShardSet Shards { get; }

    public ShardedDataSource Source { get; }

    public string Table { get; }

    /// <summary>Creates the context; <paramref name="ddl"/> gets the table name as {0} and runs on every shard.</summary>
    public static async Task<ShardTestContext> CreateAsync(string ddl, Action<ShardedDataSourceBuilder>? configure = null, string stem = "t",
        bool proxied = false, TimeSpan proxyDelay = default)
    {
        var shards = await Tests.Shards.GetAsync();
        var builder = new ShardedDataSourceBuilder();
        var proxies = new List<DelayProxy>();
        for (var i = 0; i < shards.Count; i++)
        {
            var cs = shards.ConnectionStrings[i];
            if (proxied)
            {
                var proxy = DelayProxy.Start(cs, proxyDelay);
                proxies.Add(proxy);
                cs = proxy.Rewrite(cs) + ";Timeout=5;Cancellation Timeout=2000";
            }

            builder.AddShard(shards.Names[i], cs);
        }

        configure?.Invoke(builder);
        var context = new ShardTestContext(shards, builder.Build(), Tests.Shards.UniqueTable(stem), proxies);
        await context.OnEveryShardAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, ddl, context.Table));
        return context;
    }

    public async Task OnEveryShardAsync(string sql)
    {
        foreach (var cs in Shards.ConnectionStrings)
        {
            await using var conn = new NpgsqlConnection(cs);
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand(sql, conn);
            await cmd.ExecuteNonQueryAsync();
        }
    }

    /// <summary>Runs a query directly on one shard, bypassing ShardKit.</summary>
    public async Task<List<T>> DirectAsync<T>(string shard, string sql)
    {
        await using var conn = new NpgsqlConnection(Shards.ConnectionStrings[Shards.Names.ToList().IndexOf(shard)]);
        await conn.OpenAsync();
        return (await Dapper.SqlMapper.QueryAsync<T>(conn, sql)).ToList();
    }

    /// <summary>
    /// Waits (up to 5 s) until no shard runs a query containing <paramref name="marker"/>, and fails naming the shard
    /// where one still runs: proof that a cancellation reached the servers.
    /// </summary>
    public async Task AssertNotRunningAsync(string marker)
    {
        foreach (var shard in Shards.Names)
        {
            long running = -1;
            for (var i = 0; i < 50 && running != 0; i++)
            {
                running = (await DirectAsync<long>(shard,
                    $"select count(*) from pg_stat_activity where query like '%{marker}%' and state = 'active' and pid <> pg_backend_pid()"))[0];
                if (running != 0)
                {
                    await Task.Delay(100);
                }
            }

            Assert.That(running, Is.Zero, $"the query still runs on {shard}");
        }
    }

    /// <summary>The shard a server port belongs to.</summary>
    public string ShardOfPort(int port) =>
        Shards.Names[Shards.ConnectionStrings.ToList().FindIndex(cs => new NpgsqlConnectionStringBuilder(cs).Port == port)];

    public async ValueTask DisposeAsync()
    {
        await OnEveryShardAsync($"drop table if exists {Table}");
        await Source.DisposeAsync();
        foreach (var proxy in Proxies)
        {
            await proxy.DisposeAsync();
        }
    }
}

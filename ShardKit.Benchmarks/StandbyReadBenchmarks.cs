using BenchmarkDotNet.Attributes;
using Dapper;
using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Benchmarks;

/// <summary>
/// A point read on a shard's streaming standby: ShardKit routed by key under <see cref="ReadPolicy.PreferStandby"/>
/// (the server chosen from the last background check, the connection's read-your-writes position compared) against the
/// same query through raw Dapper on that standby's own <see cref="NpgsqlDataSource"/>. One primary and one standby of
/// the benchmark's own, started here.
/// </summary>
[MemoryDiagnoser]
public class StandbyReadBenchmarks
{
    private const string Sql = "select customer_id, id, total, created_at from bench_orders where customer_id = @CustomerId";
    private LocalPostgresCluster _cluster = null!;
    private LocalStandby _standby = null!;
    private ShardedDataSource _source = null!;
    private NpgsqlDataSource _direct = null!;
    private long _key;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        Dapper.DefaultTypeMap.MatchNamesWithUnderscores = true;
        var binaries = PostgresBinaries.Find() ?? throw new InvalidOperationException("StandbyReadBenchmarks start their own servers: install initdb/pg_ctl or set SHARDKIT_PG_BIN.");
        _cluster = await LocalPostgresCluster.StartAsync(binaries, 1);
        await using (var primary = new NpgsqlConnection(_cluster.ConnectionStrings[0]))
        {
            await primary.OpenAsync();
            await primary.ExecuteAsync("create table bench_orders (customer_id bigint, id bigint, total numeric, created_at timestamp, primary key (customer_id, id))");
            await primary.ExecuteAsync("insert into bench_orders values (@CustomerId, @Id, @Total, @CreatedAt)",
                Enumerable.Range(1, 2000).Select(i => new BenchOrder { CustomerId = i % 200, Id = i, Total = i, CreatedAt = DateTime.UnixEpoch.AddHours(i) }));
        }

        _standby = await LocalStandby.StartAsync(_cluster, 0, "bench-standby");
        await _standby.CatchUpAsync();
        _source = new ShardedDataSourceBuilder()
            .AddShard("s0", _cluster.ConnectionStrings[0], _standby.ConnectionString)
            .UseReplicas(new ReplicaOptions { ReadPolicy = ReadPolicy.PreferStandby })
            .Build();
        await _source.Shards.Standbys.RefreshAsync(CancellationToken.None);
        _direct = NpgsqlDataSource.Create(_standby.ConnectionString);
        _key = 42;

        // Both sides return the same ten rows, and ShardKit's come from the standby.
        await using var db = _source.CreateConnection();
        var server = await db.OnShard("s0").QuerySingleAsync<int>("select inet_server_port()");
        if (server != _standby.Port || await RawDapperAsync() != 10 || await ShardKitPreferStandbyAsync() != 10)
        {
            throw new InvalidOperationException("The standby read does not return the expected rows from the standby.");
        }
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _source.DisposeAsync();
        await _direct.DisposeAsync();
        await _standby.DisposeAsync();
        await _cluster.DisposeAsync();
    }

    [Benchmark(Baseline = true, Description = "raw Dapper on the standby's data source")]
    public async Task<int> RawDapperAsync()
    {
        await using var connection = await _direct.OpenConnectionAsync();
        return (await connection.QueryAsync<BenchOrder>(Sql, new { CustomerId = _key })).AsList().Count;
    }

    [Benchmark(Description = "ShardKit routed by key, PreferStandby")]
    public async Task<int> ShardKitPreferStandbyAsync()
    {
        await using var db = _source.CreateConnection();
        return (await db.QueryAsync<BenchOrder>(Sql, new { CustomerId = _key })).AsList().Count;
    }
}

using BenchmarkDotNet.Attributes;
using Dapper;
using Npgsql;

namespace ShardKit.Benchmarks;

/// <summary>
/// A point query by shard key: ShardKit's routed call against the same query through raw Dapper on the owning
/// shard's <see cref="NpgsqlDataSource"/> (what a hand-written router that already knows the shard would do).
/// </summary>
[MemoryDiagnoser]
public class RoutedQueryBenchmarks
{
    private const string Sql = "select customer_id, id, total, created_at from bench_orders where customer_id = @CustomerId";
    private BenchmarkShards _shards = null!;
    private NpgsqlDataSource _owner = null!;
    private long _key;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _shards = await BenchmarkShards.StartAsync();
        await _shards.OnEveryShardAsync("drop table if exists bench_orders; create table bench_orders (customer_id bigint, id bigint, total numeric, created_at timestamp, primary key (customer_id, id))");
        await using (var db = _shards.Source.CreateConnection())
        {
            await db.ExecuteAsync("insert into bench_orders values (@CustomerId, @Id, @Total, @CreatedAt)",
                Enumerable.Range(1, 2000).Select(i => new BenchOrder { CustomerId = i % 200, Id = i, Total = i, CreatedAt = DateTime.UnixEpoch.AddHours(i) }));
        }

        _key = 42;
        _owner = _shards.Source.GetShardDataSource(_shards.Source.ShardFor(_key));
        // The benchmark measures the path the tests check: both sides return the same ten rows.
        if ((await RawDapperAsync()) != 10 || (await ShardKitRoutedAsync()) != 10)
        {
            throw new InvalidOperationException("The routed query does not return the expected rows.");
        }
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _shards.OnEveryShardAsync("drop table if exists bench_orders");
        await _shards.DisposeAsync();
    }

    [Benchmark(Baseline = true, Description = "raw Dapper on the shard's data source")]
    public async Task<int> RawDapperAsync()
    {
        await using var connection = await _owner.OpenConnectionAsync();
        return (await connection.QueryAsync<BenchOrder>(Sql, new { CustomerId = _key })).AsList().Count;
    }

    [Benchmark(Description = "ShardKit routed by key")]
    public async Task<int> ShardKitRoutedAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return (await db.QueryAsync<BenchOrder>(Sql, new { CustomerId = _key })).AsList().Count;
    }
}

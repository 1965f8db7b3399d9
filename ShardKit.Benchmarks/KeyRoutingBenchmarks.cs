using BenchmarkDotNet.Attributes;

namespace ShardKit.Benchmarks;

/// <summary>
/// Resolving the key of a typed entity and choosing its shard, without any I/O: ShardKit's compiled accessor and
/// hash placement against a hand-written <c>CustomerId % shards</c>.
/// </summary>
[MemoryDiagnoser]
public class KeyRoutingBenchmarks
{
    private ShardedDataSource _source = null!;
    private BenchOrder _order = null!;
    private object _parameters = null!;

    [GlobalSetup]
    public void Setup()
    {
        _source = new ShardedDataSourceBuilder()
            .AddShard("s0", "Host=127.0.0.1").AddShard("s1", "Host=127.0.0.1").AddShard("s2", "Host=127.0.0.1").AddShard("s3", "Host=127.0.0.1")
            .UseHashSharding(1024)
            .Build();
        _order = new BenchOrder { CustomerId = 1_234_567, Id = 1 };
        _parameters = new { CustomerId = 1_234_567L };
    }

    [GlobalCleanup]
    public void Cleanup() => _source.Dispose();

    // .NET's hash is seeded per process, which is exactly why ShardKit cannot use it; it is here as a cost yardstick.
    [Benchmark(Baseline = true, Description = "hand-written HashCode.Combine(key) & 3")]
    public int HandWrittenHash() => HashCode.Combine(_order.CustomerId) & 3;

    [Benchmark(Description = "ShardKit: typed entity key -> shard")]
    public int TypedEntity() => _source.Map.Strategy.ShardOf(ShardKeyAccessor<BenchOrder>.Read(_order));

    [Benchmark(Description = "ShardKit: parameter object + result type -> shard")]
    public int ParameterObject() => RouteResolver.Resolve(_source.Map, _source.KeyNames, _parameters, typeof(BenchOrder)).Shard;
}

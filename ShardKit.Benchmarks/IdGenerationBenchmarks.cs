using BenchmarkDotNet.Attributes;

namespace ShardKit.Benchmarks;

/// <summary>
/// The cost of one application id, with its worker leased from a real shard, against what a hand-written scheme
/// reaches for first: a process-local <see cref="Interlocked.Increment(ref long)"/> (unique in one process only) and
/// <see cref="Guid"/>s (unique everywhere, but 128 bits, and no shard in them). Keys and buckets change on every
/// call, as rows for many customers do; one hot key alone is held to 16 ids per millisecond.
/// </summary>
[MemoryDiagnoser]
public class IdGenerationBenchmarks
{
    private const string WorkerTable = "bench_id_workers";
    private BenchmarkShards _shards = null!;
    private ShardIdGenerator _generator = null!;
    private long _counter;
    private long _key;
    private int _bucket;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _shards = await BenchmarkShards.StartAsync(configure: b => b.UseHashSharding(1024));
        _generator = await ShardIdGenerator.CreateAsync(_shards.Source, new ShardIdGeneratorOptions { WorkerTable = WorkerTable });

        // The benchmark measures the path the tests check: an id carries its key's bucket.
        if (ShardId.BucketOf(_generator.NextId(42L)) != _shards.Source.Map.BucketOf(42L))
        {
            throw new InvalidOperationException("The id does not carry its key's bucket.");
        }
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _generator.DisposeAsync();
        await using (var command = _shards.Source.GetShardDataSource("s0").CreateCommand($"drop table if exists {WorkerTable}"))
        {
            await command.ExecuteNonQueryAsync();
        }

        await _shards.DisposeAsync();
    }

    /// <summary>The hand-written baseline: a 64-bit counter, unique within this process only.</summary>
    [Benchmark(Baseline = true, Description = "hand-written Interlocked.Increment counter")]
    public long InterlockedCounter() => Interlocked.Increment(ref _counter);

    [Benchmark(Description = "Guid.NewGuid()")]
    public Guid NewGuid() => Guid.NewGuid();

    [Benchmark(Description = "Guid.CreateVersion7() (time-ordered)")]
    public Guid GuidVersion7() => Guid.CreateVersion7();

    [Benchmark(Description = "ShardKit: NextIdForBucket(bucket)")]
    public long NextIdForBucket() => _generator.NextIdForBucket(_bucket = (_bucket + 1) & 1023);

    [Benchmark(Description = "ShardKit: NextId(long key) incl. hashint8")]
    public long NextIdForKey() => _generator.NextId(++_key);
}

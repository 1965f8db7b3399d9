using BenchmarkDotNet.Attributes;

namespace ShardKit.Benchmarks;

/// <summary>
/// Migrating a schema (four scripts: create table, fill it, add a column, <c>CREATE INDEX CONCURRENTLY</c>) onto 1, 4 and
/// 16 shards with <see cref="ShardedDataSource.MigrateAsync"/>, each shard its own database (16 databases over the
/// harness's servers). Baseline: the same migration of one shard. Target: 16 shards take at most 1.5× one shard, with
/// <see cref="MigrationOptions.MaxParallelism"/> = 16; with the canary first (the default) a run is two rounds (the
/// canary, then the rest), so the 16-shard case is also measured with <see cref="MigrationOptions.CanaryFirst"/> off.
/// Every iteration starts from empty databases. <see cref="Setting"/>: <c>local</c>, the 16 databases share this
/// machine's two cores with the benchmark and CPU decides; <c>2 ms away</c>, a proxy in front of each shard adds that
/// one-way delay, so round trips count as between real servers (the fan-out suite's setting); <c>2 ms away, 50 ms
/// work</c>, each transactional script also waits 50 ms on the server (<c>pg_sleep</c>), standing in for work that 16
/// real servers would each do on their own CPU, which 16 databases on two shared cores cannot show.
/// </summary>
[MemoryDiagnoser]
public class MigrationBenchmarks
{
    private Migration[] _scripts = null!;
    private readonly MigrationOptions _options = new() { MaxParallelism = 16, LockTimeout = TimeSpan.Zero };
    private readonly MigrationOptions _noCanary = new() { MaxParallelism = 16, LockTimeout = TimeSpan.Zero, CanaryFirst = false };
    private BenchmarkShards _one = null!;
    private BenchmarkShards _four = null!;
    private BenchmarkShards _sixteen = null!;

    [Params("local", "2 ms away", "2 ms away, 50 ms work")]
    public string Setting { get; set; } = "local";

    [GlobalSetup]
    public async Task SetupAsync()
    {
        var delay = Setting.StartsWith("2 ms", StringComparison.Ordinal) ? TimeSpan.FromMilliseconds(2) : TimeSpan.Zero;
        var work = Setting.EndsWith("work", StringComparison.Ordinal) ? "; select pg_sleep(0.05)" : "";
        _scripts =
        [
            new(1, "create_items", "create table bench_items (id bigint primary key, customer_id bigint not null, total numeric not null)" + work),
            new(2, "fill_items", "insert into bench_items select g, g % 100, g from generate_series(1, 1000) as g" + work),
            new(3, "items_note", "alter table bench_items add column note text" + work),
            new(4, "items_by_customer", "create index concurrently if not exists bench_items_customer on bench_items (customer_id)") { IsTransactional = false },
        ];
        _one = await BenchmarkShards.StartAsync(1, delay, databasePrefix: "bench_mig");
        _four = await BenchmarkShards.StartAsync(4, delay, databasePrefix: "bench_mig");
        _sixteen = await BenchmarkShards.StartAsync(16, delay, databasePrefix: "bench_mig");
        Reset();
        foreach (var shards in new[] { _one, _four, _sixteen })
        {
            var result = await shards.Source.MigrateAsync(_scripts, _options);
            if (result.AppliedCount != _scripts.Length * shards.Source.ShardNames.Count)
            {
                throw new InvalidOperationException($"Expected every script on every shard; applied {result.AppliedCount}.");
            }

            Reset();
        }
    }

    // Drops what a migration created, on all 16 databases (the smaller sets use the first of them).
    [IterationSetup]
    public void Reset() => _sixteen.OnEveryShardAsync("drop table if exists bench_items, shardkit_migrations").GetAwaiter().GetResult();

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        Reset();
        await _one.DisposeAsync();
        await _four.DisposeAsync();
        await _sixteen.DisposeAsync();
    }

    [Benchmark(Baseline = true, Description = "MigrateAsync, 1 shard")]
    public Task<MigrationResult> OneShardAsync() => _one.Source.MigrateAsync(_scripts, _options);

    [Benchmark(Description = "MigrateAsync, 4 shards")]
    public Task<MigrationResult> FourShardsAsync() => _four.Source.MigrateAsync(_scripts, _options);

    [Benchmark(Description = "MigrateAsync, 16 shards")]
    public Task<MigrationResult> SixteenShardsAsync() => _sixteen.Source.MigrateAsync(_scripts, _options);

    [Benchmark(Description = "MigrateAsync, 16 shards, CanaryFirst = false")]
    public Task<MigrationResult> SixteenShardsNoCanaryAsync() => _sixteen.Source.MigrateAsync(_scripts, _noCanary);
}

using BenchmarkDotNet.Attributes;
using Dapper;
using Npgsql;

namespace ShardKit.Benchmarks;

/// <summary>
/// The newest 50 orders across every shard, each shard behind a proxy adding a one-way delay (a remote shard).
/// Baseline: the hand-written loop a user writes without ShardKit (SQLAlchemy's ShardedSession does the same):
/// query each shard in turn, concatenate, sort, take 50. Also the same read on one shard, the floor a parallel
/// fan-out approaches.
/// </summary>
[MemoryDiagnoser]
public class FanOutBenchmarks
{
    private const string Sql = "select customer_id, id, total, created_at from bench_fanout order by created_at desc, id desc limit @Take";
    private static readonly MergePlan<BenchOrder> Newest = Merge.OrderByDescending<BenchOrder, DateTime>(o => o.CreatedAt).ThenByDescending(o => o.Id).Take(50);
    private BenchmarkShards _shards = null!;
    private NpgsqlDataSource[] _direct = [];

    [Params(4, 8)]
    public int Shards { get; set; }

    [Params(0, 1, 2)]
    public int DelayMs { get; set; }

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _shards = await BenchmarkShards.StartAsync(Shards, TimeSpan.FromMilliseconds(DelayMs), shareServers: true);
        await _shards.OnEveryShardAsync("drop table if exists bench_fanout; create table bench_fanout (customer_id bigint, id bigint, total numeric, created_at timestamp, primary key (customer_id, id)); " +
                                        "insert into bench_fanout select g % 200, g, g, timestamp '2026-01-01' + g * interval '1 minute' from generate_series(1, 5000) g; analyze bench_fanout");
        _direct = _shards.Source.Map.ShardNames.Select(_shards.Source.GetShardDataSource).ToArray();

        // Measure only a path the tests check: both sides agree on the 50 rows.
        var expected = await SequentialLoopAsync();
        var actual = await ShardKitFanOutAsync();
        if (!expected.Select(o => o.Id).SequenceEqual(actual.Select(o => o.Id)) || expected.Count != 50)
        {
            throw new InvalidOperationException("The fan-out and the hand-written loop disagree.");
        }
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _shards.OnEveryShardAsync("drop table if exists bench_fanout");
        await _shards.DisposeAsync();
    }

    [Benchmark(Baseline = true, Description = "sequential loop over the shards")]
    public async Task<List<BenchOrder>> SequentialLoopAsync()
    {
        var rows = new List<BenchOrder>();
        foreach (var shard in _direct)
        {
            await using var connection = await shard.OpenConnectionAsync();
            rows.AddRange(await connection.QueryAsync<BenchOrder>(Sql, new { Take = 50 }));
        }

        return rows.OrderByDescending(o => o.CreatedAt).ThenByDescending(o => o.Id).Take(50).ToList();
    }

    [Benchmark(Description = "ShardKit parallel fan-out, k-way merge")]
    public async Task<List<BenchOrder>> ShardKitFanOutAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return (await db.AllShards().QueryAsync(Sql, new { Take = Newest.ShardLimit }, Newest)).ToList();
    }

    /// <summary>
    /// The floor of any parallel read on this machine, without ShardKit: every shard read at once with Dapper, then
    /// sorted and cut to 50 (no merge, no failure handling). For the quick ratios only.
    /// </summary>
    public async Task<List<BenchOrder>> ParallelByHandAsync()
    {
        var parts = await Task.WhenAll(_direct.Select(async shard =>
        {
            await using var connection = await shard.OpenConnectionAsync();
            return await connection.QueryAsync<BenchOrder>(Sql, new { Take = 50 });
        }));
        return parts.SelectMany(p => p).OrderByDescending(o => o.CreatedAt).ThenByDescending(o => o.Id).Take(50).ToList();
    }

    /// <summary>
    /// `fanout [shards] [delayMs] [rounds] [reads]`: ShardKit's fan-out, a parallel read by hand, and the sequential loop,
    /// each against the same read on one shard, alternately; medians of the time per read.
    /// </summary>
    public static async Task RatiosAsync(string[] args)
    {
        int Arg(int i, int fallback) => args.Length > i ? int.Parse(args[i], System.Globalization.CultureInfo.InvariantCulture) : fallback;
        var bench = new FanOutBenchmarks { Shards = Arg(1, 4), DelayMs = Arg(2, 2) };
        var (rounds, reads) = (Arg(3, 15), Arg(4, 50));
        await bench.SetupAsync();
        try
        {
            Func<Task> Repeat(Func<Task> once) => async () =>
            {
                for (var i = 0; i < reads; i++)
                {
                    await once();
                }
            };

            Console.WriteLine($"newest 50 of {bench.Shards} shards, {bench.DelayMs} ms away, {reads} reads per round, median of {rounds} rounds, {Environment.ProcessorCount} cores");
            foreach (var (name, run) in new (string, Func<Task>)[]
            {
                ("ShardKit fan-out", bench.ShardKitFanOutAsync),
                ("parallel by hand (no ShardKit)", bench.ParallelByHandAsync),
                ("sequential loop", bench.SequentialLoopAsync),
            })
            {
                var (mine, one, mineCpu, oneCpu) = await Interleaved.RunAsync(rounds, Repeat(run), Repeat(bench.OneShardAsync));
                Console.WriteLine($"  {name,-32} {mine / reads,7:F2} ms  one shard {one / reads,7:F2} ms  ratio {mine / one:F2}  " +
                                  $"client CPU {mineCpu / reads:F2} ms (one shard {oneCpu / reads:F2})");
            }
        }
        finally
        {
            await bench.CleanupAsync();
        }
    }

    [Benchmark(Description = "the same read on one shard")]
    public async Task<int> OneShardAsync()
    {
        await using var connection = await _direct[0].OpenConnectionAsync();
        return (await connection.QueryAsync<BenchOrder>(Sql, new { Take = 50 })).AsList().Count;
    }
}

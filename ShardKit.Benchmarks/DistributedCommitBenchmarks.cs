using BenchmarkDotNet.Attributes;
using Dapper;
using Npgsql;

namespace ShardKit.Benchmarks;

/// <summary>
/// Committing two rows atomically. Baseline: both rows on one shard in a plain Npgsql transaction through Dapper
/// (what an unsharded app pays). Against it: ShardKit's distributed transaction over two shards, one row each
/// (two-phase commit: prepare both in parallel, log the decision, commit both in parallel), and the same API when
/// both rows share a shard (plain commit, no two-phase cost). Target: two shards at most 2.5× the baseline.
/// <see cref="DelayMs"/> puts each shard behind a proxy adding that one-way delay: at 0 the servers share the
/// benchmark's two cores and CPU decides; at 1 ms round trips decide, as between real servers.
/// </summary>
[MemoryDiagnoser]
public class DistributedCommitBenchmarks
{
    private const string Insert = "insert into bench_2pc values (@CustomerId, @Id, @Total)";
    private BenchmarkShards _shards = null!;
    private NpgsqlDataSource _first = null!;
    private long _id;

    [Params(0, 1)]
    public int DelayMs { get; set; }

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _shards = await BenchmarkShards.StartAsync(2, TimeSpan.FromMilliseconds(DelayMs), b => b.UseModuloSharding());
        await _shards.OnEveryShardAsync("drop table if exists bench_2pc; create table bench_2pc (customer_id bigint, id bigint, total numeric); " +
                                        "drop table if exists bench_2pc_by_hand; create table bench_2pc_by_hand (gid text primary key)");
        _first = _shards.Source.GetShardDataSource("s0");
        await RawDapperOneShardAsync();
        var result = await ShardKitTwoShardsAsync();
        if (!result.UsedTwoPhaseCommit || !result.IsComplete || (await ShardKitOneShardAsync()).UsedTwoPhaseCommit)
        {
            throw new InvalidOperationException("The distributed commit does not take the path this benchmark measures.");
        }
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _shards.Source.RecoverAsync(); // removes the decision rows of the finished commits
        await _shards.OnEveryShardAsync("drop table if exists bench_2pc; drop table if exists bench_2pc_by_hand");
        await _shards.DisposeAsync();
    }

    /// <summary>
    /// `commit [delayMs] [rounds] [commits]`: the two-shard distributed commit and the one-shard Npgsql transaction
    /// alternately, <c>commits</c> of each per round; medians of the time per commit.
    /// </summary>
    public static async Task RatiosAsync(string[] args)
    {
        int Arg(int i, int fallback) => args.Length > i ? int.Parse(args[i], System.Globalization.CultureInfo.InvariantCulture) : fallback;
        var bench = new DistributedCommitBenchmarks { DelayMs = Arg(1, 0) };
        var (rounds, commits) = (Arg(2, 15), Arg(3, 200));
        await bench.SetupAsync();
        try
        {
            async Task Repeat(Func<Task> once)
            {
                for (var i = 0; i < commits; i++)
                {
                    await once();
                }
            }

            var (two, raw, twoCpu, rawCpu) = await Interleaved.RunAsync(rounds, () => Repeat(bench.ShardKitTwoShardsAsync), () => Repeat(bench.RawDapperOneShardAsync));
            var (one, raw1, _, _) = await Interleaved.RunAsync(rounds, () => Repeat(bench.ShardKitOneShardAsync), () => Repeat(bench.RawDapperOneShardAsync));
            Console.WriteLine($"2 shards {bench.DelayMs} ms away, {commits} commits per round, median of {rounds} rounds, {Environment.ProcessorCount} cores");
            Console.WriteLine($"  two-phase, one row on each shard {two / commits,7:F3} ms  Npgsql transaction on one shard {raw / commits,7:F3} ms  ratio {two / raw:F2}  " +
                              $"client CPU {twoCpu / commits:F3} ms (Npgsql {rawCpu / commits:F3})");
            Console.WriteLine($"  distributed API, both rows on one shard {one / commits,7:F3} ms  Npgsql {raw1 / commits,7:F3} ms  ratio {one / raw1:F2}");
            var (hand, raw2, handCpu, raw2Cpu) = await Interleaved.RunAsync(rounds, () => Repeat(bench.TwoPhaseByHandAsync), () => Repeat(bench.RawDapperOneShardAsync));
            Console.WriteLine($"  two-phase by hand (no ShardKit)  {hand / commits,7:F3} ms  Npgsql transaction on one shard {raw2 / commits,7:F3} ms  ratio {hand / raw2:F2}  " +
                              $"client CPU {handCpu / commits:F3} ms (Npgsql {raw2Cpu / commits:F3})");
        }
        finally
        {
            await bench.CleanupAsync();
        }
    }

    [Benchmark(Baseline = true, Description = "Npgsql transaction, two rows on one shard")]
    public async Task RawDapperOneShardAsync()
    {
        var id = Interlocked.Increment(ref _id);
        await using var connection = await _first.OpenConnectionAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await connection.ExecuteAsync(Insert, new[] { new { CustomerId = 0L, Id = id, Total = 1m }, new { CustomerId = 2L, Id = id, Total = 2m } }, transaction);
        await transaction.CommitAsync();
    }

    [Benchmark(Description = "ShardKit distributed, one row on each of two shards (2PC)")]
    public async Task<DistributedCommitResult> ShardKitTwoShardsAsync()
    {
        var id = Interlocked.Increment(ref _id);
        await using var db = _shards.Source.CreateConnection();
        await using var transaction = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert, new[] { new BenchRow { CustomerId = 0, Id = id, Total = 1 }, new BenchRow { CustomerId = 1, Id = id, Total = 2 } });
        return await transaction.CommitAsync();
    }

    /// <summary>
    /// The least a synchronous two-phase commit of these two rows costs, by hand with Npgsql and no ShardKit: each row
    /// written in its shard's transaction (both at once, <c>begin</c> in the same round trip), <c>PREPARE TRANSACTION</c>
    /// on the second shard, the decision row inserted and committed with the first shard's own part, then
    /// <c>COMMIT PREPARED</c>: four round trips, no failure handling, no recovery. For the quick ratios only.
    /// </summary>
    public async Task TwoPhaseByHandAsync()
    {
        var id = Interlocked.Increment(ref _id);
        var gid = "hand_" + id.ToString(System.Globalization.CultureInfo.InvariantCulture) + "_" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var second = _shards.Source.GetShardDataSource("s1");
        var open = await Task.WhenAll(_first.OpenConnectionAsync().AsTask(), second.OpenConnectionAsync().AsTask());
        await using var coordinator = open[0];
        await using var participant = open[1];
        const string Write = "begin; insert into bench_2pc values (@CustomerId, @Id, @Total)";
        await Task.WhenAll(
            coordinator.ExecuteAsync(Write, new { CustomerId = 0L, Id = id, Total = 1m }),
            participant.ExecuteAsync(Write, new { CustomerId = 1L, Id = id, Total = 2m }));
        await participant.ExecuteAsync($"prepare transaction '{gid}'");
        await coordinator.ExecuteAsync("insert into bench_2pc_by_hand values (@gid); commit", new { gid });
        await participant.ExecuteAsync($"commit prepared '{gid}'");
    }

    [Benchmark(Description = "ShardKit distributed, two rows on one shard (plain commit)")]
    public async Task<DistributedCommitResult> ShardKitOneShardAsync()
    {
        var id = Interlocked.Increment(ref _id);
        await using var db = _shards.Source.CreateConnection();
        await using var transaction = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync(Insert, new[] { new BenchRow { CustomerId = 0, Id = id, Total = 1 }, new BenchRow { CustomerId = 2, Id = id, Total = 2 } });
        return await transaction.CommitAsync();
    }

    /// <summary>A row keyed by customer.</summary>
    public sealed class BenchRow
    {
        /// <summary>The shard key.</summary>
        [ShardKey]
        public long CustomerId { get; init; }

        /// <summary>The row id.</summary>
        public long Id { get; init; }

        /// <summary>An amount.</summary>
        public decimal Total { get; init; }
    }
}

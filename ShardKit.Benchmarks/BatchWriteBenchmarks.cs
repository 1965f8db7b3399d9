using BenchmarkDotNet.Attributes;
using Dapper;
using Npgsql;

namespace ShardKit.Benchmarks;

/// <summary>
/// Batch writes: 20,000 rows of (id bigint, name varchar) sent 1,000 per call to 2 shards. Baseline: hand-written
/// <see cref="NpgsqlBatch"/> of each call's inserts per shard, one transaction per shard, shards in parallel. ShardKit:
/// <c>ExecuteBatchAsync</c> (pipelined, all-or-nothing across shards). Per-row: one statement per round trip, either
/// routed <c>ExecuteAsync</c> per row (autocommit) or Dapper's per-row loop in one transaction per shard (the previous
/// <c>ExecuteBatchAsync</c>). Per-row cases write fewer rows, so every case declares its rows as
/// <c>OperationsPerInvoke</c>: times and ratios are per row. <see cref="DelayMs"/> adds a network-like round trip,
/// which is what per-row statements pay for every row.
/// </summary>
[MemoryDiagnoser]
public class BatchWriteBenchmarks
{
    public const int Rows = 20_000;
    public const int PerCall = 1_000;
    public const int PerRowRows = 2_000;
    private const string Insert = "insert into bench_batch (id, name) values (@Id, @Name)";
    private BenchmarkShards _shards = null!;
    private NpgsqlDataSource[] _direct = null!;
    private List<BatchRow> _rows = null!;

    /// <summary>One row: its id is its shard key.</summary>
    public sealed class BatchRow
    {
        /// <summary>The id and shard key.</summary>
        [ShardKey] public long Id { get; init; }

        /// <summary>A short name.</summary>
        public string Name { get; init; } = "";
    }

    /// <summary>A one-way delay in front of each shard (ms): 0 on loopback, 1 for a round trip of about 2 ms as across a network.</summary>
    [Params(0, 1)]
    public int DelayMs { get; set; }

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _shards = await BenchmarkShards.StartAsync(count: 2, delay: TimeSpan.FromMilliseconds(DelayMs));
        await _shards.OnEveryShardAsync("drop table if exists bench_batch; create table bench_batch (id bigint, name varchar(100))");
        _direct = _shards.ConnectionStrings.Select(cs => NpgsqlDataSource.Create(cs)).ToArray();
        _rows = Enumerable.Range(0, Rows).Select(i => new BatchRow { Id = i * 7919L % 1_000_003, Name = $"name-{i}" }).ToList();

        // Every path must write every row, spread over both shards: checked once before measuring.
        var raw = await HandWrittenBatchAsync();
        var kit = await ShardKitBatchAsync();
        var counts = await CountsAsync();
        await TruncateAsync();
        if (raw != Rows || kit != Rows || counts.Any(c => c == 0) || counts.Sum() != 2 * Rows)
        {
            throw new InvalidOperationException($"Wrote {raw} hand-written and {kit} ShardKit rows; shards hold {string.Join(", ", counts)}.");
        }
    }

    [IterationCleanup]
    public void IterationCleanup() => TruncateAsync().GetAwaiter().GetResult();

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _shards.OnEveryShardAsync("drop table if exists bench_batch");
        foreach (var source in _direct)
        {
            await source.DisposeAsync();
        }

        await _shards.DisposeAsync();
    }

    /// <summary>
    /// `batch [delayMs] [rounds]`: ShardKit's batch and the hand-written one alternately, the table emptied between runs
    /// (untimed); medians of the wall-clock and client-CPU time per row.
    /// </summary>
    public static async Task RatiosAsync(string[] args)
    {
        int Arg(int i, int fallback) => args.Length > i ? int.Parse(args[i], System.Globalization.CultureInfo.InvariantCulture) : fallback;
        var bench = new BatchWriteBenchmarks { DelayMs = Arg(1, 0) };
        var rounds = Arg(2, 15);
        await bench.SetupAsync();
        try
        {
            var (mine, loop, mineCpu, loopCpu) = await Interleaved.RunAsync(rounds, bench.ShardKitBatchAsync, bench.HandWrittenBatchAsync, bench.TruncateAsync);
            const double perRow = 1000.0 / Rows; // ms per run → µs per row
            Console.WriteLine($"{Rows:N0} rows, {PerCall:N0} per call, 2 shards {bench.DelayMs} ms away: median of {rounds} rounds, {Environment.ProcessorCount} cores");
            Console.WriteLine($"  ExecuteBatchAsync {mine * perRow,6:F2} µs per row  hand-written NpgsqlBatch {loop * perRow,6:F2} µs  ratio {mine / loop:F2}  " +
                              $"client CPU {mineCpu * perRow:F2} µs per row (hand-written {loopCpu * perRow:F2})");
        }
        finally
        {
            await bench.CleanupAsync();
        }
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Rows, Description = "hand-written NpgsqlBatch per shard, tx per shard (per row)")]
    public async Task<int> HandWrittenBatchAsync()
    {
        var written = 0;
        for (var start = 0; start < Rows; start += PerCall)
        {
            var perShard = new List<BatchRow>[_direct.Length];
            for (var i = start; i < start + PerCall; i++)
            {
                var shard = _shards.Source.Map.Strategy.ShardOf(_rows[i].Id);
                (perShard[shard] ??= []).Add(_rows[i]);
            }

            var counts = await Task.WhenAll(perShard.Select((rows, shard) => rows is null ? Task.FromResult(0) : WriteShardAsync(_direct[shard], rows)));
            written += counts.Sum();
        }

        return written;

        static async Task<int> WriteShardAsync(NpgsqlDataSource source, List<BatchRow> rows)
        {
            await using var connection = await source.OpenConnectionAsync();
            await using var transaction = await connection.BeginTransactionAsync();
            await using var batch = new NpgsqlBatch(connection, transaction);
            foreach (var row in rows)
            {
                batch.BatchCommands.Add(new NpgsqlBatchCommand("insert into bench_batch (id, name) values ($1, $2)")
                {
                    Parameters = { new NpgsqlParameter { Value = row.Id }, new NpgsqlParameter { Value = row.Name } },
                });
            }

            var written = await batch.ExecuteNonQueryAsync();
            await transaction.CommitAsync();
            return written;
        }
    }

    [Benchmark(OperationsPerInvoke = Rows, Description = "ShardKit ExecuteBatchAsync (per row)")]
    public async Task<int> ShardKitBatchAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        var written = 0;
        for (var start = 0; start < Rows; start += PerCall)
        {
            written += (await db.ExecuteBatchAsync(Insert, _rows.GetRange(start, PerCall))).Total;
        }

        return written;
    }

    [Benchmark(OperationsPerInvoke = PerRowRows, Description = "per-row statements: routed ExecuteAsync, autocommit (per row)")]
    public async Task<int> PerRowRoutedAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        var written = 0;
        for (var i = 0; i < PerRowRows; i++)
        {
            written += await db.ExecuteAsync(Insert, _rows[i]);
        }

        return written;
    }

    [Benchmark(OperationsPerInvoke = PerRowRows, Description = "per-row statements in a tx per shard: Dapper's loop (per row)")]
    public async Task<int> PerRowInTransactionAsync()
    {
        var written = 0;
        for (var start = 0; start < PerRowRows; start += PerCall)
        {
            var perShard = _rows.GetRange(start, PerCall).GroupBy(r => _shards.Source.Map.Strategy.ShardOf(r.Id));
            var counts = await Task.WhenAll(perShard.Select(async group =>
            {
                await using var connection = await _direct[group.Key].OpenConnectionAsync();
                await using var transaction = await connection.BeginTransactionAsync();
                var rows = await connection.ExecuteAsync(Insert, group.ToList(), transaction);
                await transaction.CommitAsync();
                return rows;
            }));
            written += counts.Sum();
        }

        return written;
    }

    private async Task<long[]> CountsAsync()
    {
        var counts = new long[_direct.Length];
        for (var i = 0; i < _direct.Length; i++)
        {
            await using var connection = await _direct[i].OpenConnectionAsync();
            counts[i] = await connection.ExecuteScalarAsync<long>("select count(*) from bench_batch");
        }

        return counts;
    }

    private Task TruncateAsync() => _shards.OnEveryShardAsync("truncate bench_batch");
}

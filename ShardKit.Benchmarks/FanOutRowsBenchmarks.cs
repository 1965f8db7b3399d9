using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using Dapper;
using Npgsql;

namespace ShardKit.Benchmarks;

/// <summary>
/// Reading many rows of <c>(id bigint, name varchar)</c> from every shard: ShardKit's parallel fan-out (arrival order,
/// ordered k-way merge, Take) buffered and streamed, against the loop a user writes without ShardKit: each shard in
/// turn with Dapper's buffered <c>QueryAsync</c> on its own data source, the lists concatenated.
/// </summary>
/// <remarks>
/// The default cases are a subset that runs in minutes with <c>--job short</c>; set <c>SHARDKIT_FANOUT_ROWS_FULL=1</c>
/// for every combination of 20k/200k/1M rows, 2/4 shards and 0/1 ms one-way delay.
/// </remarks>
[MemoryDiagnoser]
public class FanOutRowsBenchmarks
{
    private const string Sql = "select id, name from bench_rows";
    private const string OrderedSql = "select id, name from bench_rows order by id";
    private static readonly MergePlan<NameRow> ById = Merge.OrderBy<NameRow, long>(r => r.Id);
    private BenchmarkShards _shards = null!;
    private NpgsqlDataSource[] _direct = [];

    /// <summary>One row as the benchmark maps it.</summary>
    public sealed class NameRow
    {
        public long Id { get; set; }

        public string Name { get; set; } = "";
    }

    /// <summary>Rows in total (spread evenly over the shards), the number of shards, and the one-way delay to each.</summary>
    public sealed record RowsCase(int Rows, int Shards, int DelayMs)
    {
        public override string ToString() => $"{Rows / 1000}k x{Shards} {DelayMs}ms";
    }

    [ParamsSource(nameof(Cases))]
    public RowsCase Case { get; set; } = new(20_000, 2, 0);

    public static IEnumerable<RowsCase> Cases()
    {
        if (Environment.GetEnvironmentVariable("SHARDKIT_FANOUT_ROWS_FULL") == "1")
        {
            return from rows in new[] { 20_000, 200_000, 1_000_000 }
                   from shards in new[] { 2, 4 }
                   from delay in new[] { 0, 1 }
                   select new RowsCase(rows, shards, delay);
        }

        return [new(20_000, 2, 0), new(200_000, 2, 0), new(1_000_000, 2, 0), new(200_000, 4, 0), new(20_000, 2, 1), new(200_000, 2, 1)];
    }

    /// <summary>Rows the Take plan keeps: half, so it reads a real stream and then stops the shards early.</summary>
    private int TakeCount => Case.Rows / 2;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _shards = await BenchmarkShards.StartAsync(Case.Shards, TimeSpan.FromMilliseconds(Case.DelayMs));
        var perShard = Case.Rows / Case.Shards;
        for (var i = 0; i < Case.Shards; i++)
        {
            // Generated on the server: loading is not what is measured.
            await using var connection = await _shards.Source.GetShardDataSource($"s{i}").OpenConnectionAsync();
            await connection.ExecuteAsync("drop table if exists bench_rows");
            await connection.ExecuteAsync("create table bench_rows (id bigint primary key, name varchar not null)");
            await connection.ExecuteAsync(
                "insert into bench_rows select g * @Shards + @Shard, 'user ' || (g * @Shards + @Shard) from generate_series(0, @PerShard - 1) g",
                new { Shards = (long)Case.Shards, Shard = (long)i, PerShard = perShard });
            await connection.ExecuteAsync("vacuum analyze bench_rows");
        }

        _direct = _shards.Source.Map.ShardNames.Select(_shards.Source.GetShardDataSource).ToArray();

        // Measure only paths that return what the loop does.
        var expected = await SequentialLoopAsync();
        if (expected.Count != perShard * Case.Shards || (await ArrivalAsync()).Count != expected.Count ||
            await ArrivalUnbufferedAsync() != expected.Count || (await OrderedAsync()).Count != expected.Count ||
            await OrderedUnbufferedAsync() != expected.Count || (await TakeAsync()).Count != TakeCount || await TakeUnbufferedAsync() != TakeCount)
        {
            throw new InvalidOperationException("The fan-out and the hand-written loop disagree on the rows.");
        }

        // The ordered sides return the same ids in the same order.
        if (!(await OrderedAsync()).Select(r => r.Id).SequenceEqual((await SequentialOrderedLoopAsync()).Select(r => r.Id))
            || (await ParallelByHandAsync()).Count != expected.Count)
        {
            throw new InvalidOperationException("The ordered fan-out and the ordered loop disagree on the rows or their order.");
        }
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _shards.OnEveryShardAsync("drop table if exists bench_rows");
        await _shards.DisposeAsync();
    }

    [Benchmark(Baseline = true, Description = "sequential loop, Dapper QueryAsync per shard")]
    [BenchmarkCategory("arrival", "ordered", "take")]
    public async Task<List<NameRow>> SequentialLoopAsync()
    {
        var rows = new List<NameRow>();
        foreach (var shard in _direct)
        {
            await using var connection = await shard.OpenConnectionAsync();
            rows.AddRange(await connection.QueryAsync<NameRow>(Sql));
        }

        return rows;
    }

    /// <summary>
    /// The same loop for an ordered result, as its writer would make it: each shard's rows by <c>order by id</c> in turn,
    /// then the concatenated list sorted by id (the ordered plans' baseline in the quick ratios).
    /// </summary>
    [Benchmark(Description = "sequential loop, order by + List.Sort")]
    [BenchmarkCategory("ordered")]
    public async Task<List<NameRow>> SequentialOrderedLoopAsync()
    {
        var rows = new List<NameRow>();
        foreach (var shard in _direct)
        {
            await using var connection = await shard.OpenConnectionAsync();
            rows.AddRange(await connection.QueryAsync<NameRow>(OrderedSql));
        }

        rows.Sort(static (a, b) => a.Id.CompareTo(b.Id));
        return rows;
    }

    /// <summary>
    /// The floor of any parallel read on this machine, without ShardKit: every shard read at once with Dapper's buffered
    /// QueryAsync, the lists concatenated (no merge, no failure handling, no limits). For the quick ratios only.
    /// </summary>
    public async Task<List<NameRow>> ParallelByHandAsync()
    {
        var parts = await Task.WhenAll(_direct.Select(async shard =>
        {
            await using var connection = await shard.OpenConnectionAsync();
            return await connection.QueryAsync<NameRow>(Sql);
        }));
        var rows = new List<NameRow>(parts.Sum(p => p.AsList().Count));
        foreach (var part in parts)
        {
            rows.AddRange(part);
        }

        return rows;
    }

    [Benchmark(Description = "fan-out QueryAsync, arrival order")]
    [BenchmarkCategory("arrival")]
    public async Task<IReadOnlyList<NameRow>> ArrivalAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return await db.AllShards().QueryAsync<NameRow>(Sql);
    }

    [Benchmark(Description = "fan-out QueryUnbufferedAsync, arrival order")]
    [BenchmarkCategory("arrival")]
    public async Task<int> ArrivalUnbufferedAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return await CountAsync(db.AllShards().QueryUnbufferedAsync<NameRow>(Sql));
    }

    [Benchmark(Description = "fan-out QueryAsync, Merge.OrderBy")]
    [BenchmarkCategory("ordered")]
    public async Task<IReadOnlyList<NameRow>> OrderedAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return await db.AllShards().QueryAsync(OrderedSql, null, ById);
    }

    [Benchmark(Description = "fan-out QueryUnbufferedAsync, Merge.OrderBy")]
    [BenchmarkCategory("ordered")]
    public async Task<int> OrderedUnbufferedAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return await CountAsync(db.AllShards().QueryUnbufferedAsync(OrderedSql, null, ById));
    }

    [Benchmark(Description = "fan-out QueryAsync, Concat().Take(half)")]
    [BenchmarkCategory("take")]
    public async Task<IReadOnlyList<NameRow>> TakeAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return await db.AllShards().QueryAsync(Sql, null, Merge.Concat<NameRow>().Take(TakeCount));
    }

    [Benchmark(Description = "fan-out QueryUnbufferedAsync, Concat().Take(half)")]
    [BenchmarkCategory("take")]
    public async Task<int> TakeUnbufferedAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return await CountAsync(db.AllShards().QueryUnbufferedAsync(Sql, null, Merge.Concat<NameRow>().Take(TakeCount)));
    }

    private static async Task<int> CountAsync(IAsyncEnumerable<NameRow> rows)
    {
        var count = 0;
        await foreach (var _ in rows)
        {
            count++;
        }

        return count;
    }

    /// <summary>
    /// A quick check outside BenchmarkDotNet: each variant interleaved with the loop in rounds (noise hits both alike),
    /// median time over the loop's, and rows per second per core.
    /// <c>dotnet run -c Release --project ShardKit.Benchmarks -- fanout-rows [rows] [shards] [delayMs] [rounds]</c>.
    /// </summary>
    public static async Task RatiosAsync(string[] args)
    {
        int Arg(int i, int fallback) => args.Length > i ? int.Parse(args[i], System.Globalization.CultureInfo.InvariantCulture) : fallback;
        var bench = new FanOutRowsBenchmarks { Case = new(Arg(1, 200_000), Arg(2, 2), Arg(3, 0)) };
        var rounds = Arg(4, 7);
        await bench.SetupAsync();
        try
        {
            Func<Task> loop = bench.SequentialLoopAsync, orderedLoop = bench.SequentialOrderedLoopAsync;
            var variants = new (string Name, Func<Task> Run, Func<Task> Loop)[]
            {
                ("arrival, QueryAsync", bench.ArrivalAsync, loop),
                ("arrival, QueryUnbufferedAsync", bench.ArrivalUnbufferedAsync, loop),
                ("ordered, QueryAsync", bench.OrderedAsync, loop),
                ("ordered, QueryUnbufferedAsync", bench.OrderedUnbufferedAsync, loop),
                ("take half, QueryAsync", bench.TakeAsync, loop),
                ("take half, QueryUnbufferedAsync", bench.TakeUnbufferedAsync, loop),
                // The ordered plans against a loop that orders too (the loop above returns the rows unordered).
                ("ordered, QueryAsync vs ordered loop", bench.OrderedAsync, orderedLoop),
                ("ordered, Unbuffered vs ordered loop", bench.OrderedUnbufferedAsync, orderedLoop),
                // Last, when both sides' code is compiled at its final tier (the first variant's loop ran slower).
                ("parallel by hand (no ShardKit)", bench.ParallelByHandAsync, loop),
            };
            Console.WriteLine($"{bench.Case}: median of {rounds} rounds, {Environment.ProcessorCount} cores");
            foreach (var (name, run, baseline) in variants)
            {
                var (mine, loopMs, mineCpu, loopCpu) = await Interleaved.RunAsync(rounds, run, baseline);
                var rows = name.StartsWith("take", StringComparison.Ordinal) ? bench.TakeCount : bench.Case.Rows;
                Console.WriteLine($"  {name,-36} {mine,8:F1} ms  loop {loopMs,8:F1} ms  ratio {mine / loopMs:F2}  " +
                                  $"client CPU {mineCpu,7:F0} ms (loop {loopCpu,7:F0})  {rows / mineCpu / 1000:F2}M rows per CPU-second (loop {bench.Case.Rows / loopCpu / 1000:F2}M)");
            }
        }
        finally
        {
            await bench.CleanupAsync();
        }
    }
}

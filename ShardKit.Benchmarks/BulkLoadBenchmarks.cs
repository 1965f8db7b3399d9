using BenchmarkDotNet.Attributes;
using Dapper;
using Npgsql;
using NpgsqlTypes;

namespace ShardKit.Benchmarks;

/// <summary>
/// Bulk loading orders. Baseline: one hand-written binary COPY into one server (what an unsharded app does).
/// ShardKit: the same rows routed by key and copied into 4 shards in parallel, each in a transaction committed after
/// all. Per-row: ShardKit's routed <c>ExecuteAsync</c> insert, one round trip per row. The row counts differ
/// (<see cref="CopyRows"/> for the COPYs, <see cref="PerRowRows"/> for the per-row inserts, which would otherwise take
/// minutes), so every benchmark declares its rows as <c>OperationsPerInvoke</c>: times and ratios are per row.
/// </summary>
[MemoryDiagnoser]
public class BulkLoadBenchmarks
{
    public const int CopyRows = 100_000;
    public const int PerRowRows = 2_000;
    private const string Ddl = "(customer_id bigint not null, id bigint not null, total numeric not null, created_at timestamptz not null)";
    private BenchmarkShards _shards = null!;
    private NpgsqlDataSource _single = null!;
    private List<BenchOrder> _orders = null!;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _shards = await BenchmarkShards.StartAsync();
        await _shards.OnEveryShardAsync($"drop table if exists bench_bulk; create unlogged table bench_bulk {Ddl}; " +
                                        $"drop table if exists bench_bulk_raw; create unlogged table bench_bulk_raw {Ddl}");
        _single = NpgsqlDataSource.Create(_shards.ConnectionStrings[0]);
        _orders = Enumerable.Range(0, CopyRows).Select(i => new BenchOrder
        {
            CustomerId = i * 7919L % 100_003,
            Id = i,
            Total = i / 100m,
            CreatedAt = DateTime.UnixEpoch.AddSeconds(i),
        }).ToList();

        // Both COPY paths must load every row, and ShardKit must spread them: checked once before measuring.
        var raw = await RawCopyAsync();
        var sharded = await ShardKitCopyAsync();
        if (raw != CopyRows || sharded != CopyRows)
        {
            throw new InvalidOperationException($"Loaded {raw} raw and {sharded} sharded rows instead of {CopyRows}.");
        }

        await TruncateAsync();
    }

    [IterationCleanup]
    public void IterationCleanup() => TruncateAsync().GetAwaiter().GetResult();

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _shards.OnEveryShardAsync("drop table if exists bench_bulk; drop table if exists bench_bulk_raw");
        await _single.DisposeAsync();
        await _shards.DisposeAsync();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = CopyRows, Description = "raw Npgsql binary COPY, 1 server (per row)")]
    public async Task<long> RawCopyAsync()
    {
        await using var connection = await _single.OpenConnectionAsync();
        await using var importer = await connection.BeginBinaryImportAsync(
            "COPY bench_bulk_raw (customer_id, id, total, created_at) FROM STDIN (FORMAT BINARY)");
        foreach (var order in _orders)
        {
            await importer.StartRowAsync();
            await importer.WriteAsync(order.CustomerId, NpgsqlDbType.Bigint);
            await importer.WriteAsync(order.Id, NpgsqlDbType.Bigint);
            await importer.WriteAsync(order.Total, NpgsqlDbType.Numeric);
            await importer.WriteAsync(order.CreatedAt, NpgsqlDbType.TimestampTz);
        }

        return (long)await importer.CompleteAsync();
    }

    [Benchmark(OperationsPerInvoke = CopyRows, Description = "ShardKit BulkInsertAsync, 4 shards in parallel (per row)")]
    public async Task<long> ShardKitCopyAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return (await db.BulkInsertAsync("bench_bulk", _orders)).Total;
    }

    [Benchmark(OperationsPerInvoke = PerRowRows, Description = "ShardKit routed ExecuteAsync, one insert per row (per row)")]
    public async Task<int> PerRowExecuteAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        var written = 0;
        for (var i = 0; i < PerRowRows; i++)
        {
            written += await db.ExecuteAsync("insert into bench_bulk values (@CustomerId, @Id, @Total, @CreatedAt)", _orders[i]);
        }

        return written;
    }

    private Task TruncateAsync() => _shards.OnEveryShardAsync("truncate bench_bulk, bench_bulk_raw");
}

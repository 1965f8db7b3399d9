using BenchmarkDotNet.Attributes;

namespace ShardKit.Benchmarks;

/// <summary>
/// Merging 1,000,000 rows already sorted on each of 4 or 8 shards (in-memory streams, so only the merge is measured):
/// ShardKit's streaming k-way merge against the usual approach, concatenating everything and sorting with LINQ.
/// </summary>
[MemoryDiagnoser]
public class OrderedMergeBenchmarks
{
    private const int Rows = 1_000_000;
    private static readonly MergePlan<Row> ByTime = Merge.OrderBy<Row, long>(r => r.At).ThenBy(r => r.Id);
    private Row[][] _shards = [];

    public sealed record Row(long At, long Id);

    [Params(4, 8)]
    public int Shards { get; set; } = 4;

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(3);
        // Each shard's rows are created in the order the shard streams them, as a data reader materializes rows.
        _shards = Enumerable.Range(0, Shards)
            .Select(_ => Enumerable.Range(0, Rows / Shards).Select(i => (At: (long)random.Next(0, 10_000_000), Id: (long)i)).Order()
                .Select(k => new Row(k.At, k.Id)).ToArray())
            .ToArray();
        if (KWayMergeAsync().GetAwaiter().GetResult() != ConcatAndSort())
        {
            throw new InvalidOperationException("The merges disagree.");
        }
    }

    [Benchmark(Baseline = true, Description = "concat + LINQ OrderBy")]
    public long ConcatAndSort()
    {
        long checksum = 0, position = 0;
        foreach (var row in _shards.SelectMany(s => s).OrderBy(r => r.At).ThenBy(r => r.Id))
        {
            checksum += row.Id * ++position;
        }

        return checksum;
    }

    [Benchmark(Description = "ShardKit streaming k-way merge")]
    public async Task<long> KWayMergeAsync()
    {
        long checksum = 0, position = 0;
        var sources = _shards.Select((rows, i) => new MergeSource<Row>("s" + i, new InMemoryStream(rows))).ToArray();
        await foreach (var row in ByTime.MergeAsync(sources))
        {
            checksum += row.Row.Id * ++position;
        }

        return checksum;
    }

    /// <summary>A shard's rows already in memory, as a shard's buffered rows are: every move completes at once.</summary>
    private sealed class InMemoryStream(Row[] rows) : IAsyncEnumerator<Row>
    {
        private int _index = -1;

        public Row Current => rows[_index];

        public ValueTask<bool> MoveNextAsync() => new(++_index < rows.Length);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}

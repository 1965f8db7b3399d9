using BenchmarkDotNet.Attributes;
using ShardKit.Merging;

namespace ShardKit.Benchmarks;

/// <summary>
/// Merging 1,000,000 rows already sorted on each of 4 shards (in memory, so only the merge is measured): ShardKit's
/// streaming k-way merge against the usual approach, concatenating everything and sorting with LINQ.
/// </summary>
[MemoryDiagnoser]
public class OrderedMergeBenchmarks
{
    private const int Shards = 4;
    private const int Rows = 1_000_000;
    private static readonly MergePlan<Row> ByTime = Merge.OrderBy<Row, long>(r => r.At).ThenBy(r => r.Id);
    private Row[][] _shards = [];

    public sealed record Row(long At, long Id);

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(3);
        _shards = Enumerable.Range(0, Shards)
            .Select(_ => Enumerable.Range(0, Rows / Shards).Select(i => new Row(random.Next(0, 10_000_000), i)).OrderBy(r => r.At).ThenBy(r => r.Id).ToArray())
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
        var sources = _shards.Select((rows, i) => new MergeSource<Row>("s" + i, Stream(rows).GetAsyncEnumerator())).ToArray();
        await foreach (var row in ByTime.MergeAsync(sources))
        {
            checksum += row.Row.Id * ++position;
        }

        return checksum;
    }

#pragma warning disable CS1998 // a synchronous async stream: rows already in memory, as a shard's buffered rows are
    private static async IAsyncEnumerable<Row> Stream(Row[] rows)
    {
        foreach (var row in rows)
        {
            yield return row;
        }
    }
#pragma warning restore CS1998
}


namespace ShardKit.Tests.Merging;

/// <summary>Shard streams held in memory, so merge logic is tested without a server (the real-shard tests cover the rest).</summary>
internal static class InMemoryShards
{
    public static MergeSource<T>[] Of<T>(params T[][] shards) =>
        shards.Select((rows, i) => new MergeSource<T>("s" + i, Stream(rows).GetAsyncEnumerator())).ToArray();

    public static async Task<List<T>> RunAsync<T>(MergePlan<T> plan, params T[][] shards)
    {
        var result = new List<T>();
        await foreach (var row in plan.MergeAsync(Of(shards)))
        {
            result.Add(row.Row);
        }

        return result;
    }

    /// <summary>Combines one single-column row per shard.</summary>
    public static T Combine<T>(ScalarMerge<T> merge, params object?[] perShard) =>
        merge.Combine(perShard.Select(v => new[] { v }).ToList());

    /// <summary>Combines one multi-column row per shard.</summary>
    public static T CombineRows<T>(ScalarMerge<T> merge, params object?[][] perShard) => merge.Combine(perShard);

    private static async IAsyncEnumerable<T> Stream<T>(T[] rows)
    {
        foreach (var row in rows)
        {
            await Task.Yield();
            yield return row;
        }
    }
}

namespace ShardKit;

/// <summary>Which buckets move when a shard joins: an even share, taken from the shards that hold the most.</summary>
internal static class ReshardingPlan
{
    /// <summary>
    /// Per source shard, the buckets to give <paramref name="target"/> so that every shard ends with
    /// <c>buckets / shards</c> (± 1); each source gives its highest buckets, so its own stay contiguous where they were.
    /// </summary>
    public static IReadOnlyList<(int Source, int[] Buckets)> EvenShare(ShardMap map, int target)
    {
        var buckets = map.Buckets!;
        var owned = Enumerable.Range(0, map.ShardNames.Count).Select(s => buckets.BucketsOf(s).ToList()).ToArray();
        var share = buckets.Count / map.ShardNames.Count;
        var taken = new Dictionary<int, List<int>>();
        while (owned[target].Count + taken.Values.Sum(t => t.Count) < share)
        {
            var richest = Enumerable.Range(0, owned.Length).Where(s => s != target).MaxBy(s => owned[s].Count);
            if (owned[richest].Count <= share)
            {
                break;
            }

            var bucket = owned[richest][^1];
            owned[richest].RemoveAt(owned[richest].Count - 1);
            (taken.TryGetValue(richest, out var list) ? list : taken[richest] = []).Add(bucket);
        }

        return taken.OrderBy(t => t.Key).Select(t => (t.Key, t.Value.Order().ToArray())).ToArray();
    }
}

namespace ShardKit;

/// <summary>Combines rows that share a key (the per-shard partial results of a GROUP BY) into one row per key.</summary>
internal abstract class RowGrouping<T>
{
    /// <summary>Reads every row and returns one combined row per key, in order of each key's first row.</summary>
    public abstract Task<List<ShardRow<T>>> CombineAsync(IAsyncEnumerable<ShardRow<T>> rows, CancellationToken cancellationToken);
}

internal sealed class RowGrouping<T, TKey>(Func<T, TKey> key, Func<T, T, T> combine, IEqualityComparer<TKey>? comparer)
    : RowGrouping<T>
{
    public override async Task<List<ShardRow<T>>> CombineAsync(IAsyncEnumerable<ShardRow<T>> rows, CancellationToken cancellationToken)
    {
        var groups = new List<ShardRow<T>>();
#pragma warning disable CS8714 // null keys never enter the dictionary: they have a group of their own below
        var index = new Dictionary<TKey, int>(comparer);
#pragma warning restore CS8714
        var nullGroup = -1; // a dictionary cannot hold a null key; SQL's GROUP BY makes NULL a group of its own
        await foreach (var row in rows.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            var k = key(row.Row);
            int at;
            bool found;
            if (k is null)
            {
                at = nullGroup;
                found = at >= 0;
            }
            else
            {
                found = index.TryGetValue(k, out at);
            }

            if (found)
            {
                groups[at] = groups[at] with { Row = combine(groups[at].Row, row.Row) };
                continue;
            }

            if (k is null)
            {
                nullGroup = groups.Count;
            }
            else
            {
                index.Add(k, groups.Count);
            }

            groups.Add(row);
        }

        return groups;
    }
}

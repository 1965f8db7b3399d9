namespace ShardKit.Merging;

/// <summary>
/// Compares rows by one key, the way PostgreSQL's <c>ORDER BY</c> does by default: NULL sorts after every value
/// ascending (and so first descending), text by code point (as <c>COLLATE "C"</c>), NaN above every number; see
/// <see cref="PostgresOrder"/>.
/// </summary>
internal sealed class MergeKeyComparer<T, TKey>(Func<T, TKey> key, IComparer<TKey>? comparer, bool descending) : IComparer<T>
{
    // Null means the default order, called directly below so the JIT can inline it for value-type keys.
    private readonly IComparer<TKey>? _comparer = comparer ?? PostgresOrder.For<TKey>();

    public int Compare(T? x, T? y)
    {
        var a = key(x!);
        var b = key(y!);
        int result;
        if (a is null)
        {
            result = b is null ? 0 : 1;
        }
        else if (b is null)
        {
            result = -1;
        }
        else
        {
            result = _comparer is null ? Comparer<TKey>.Default.Compare(a, b) : _comparer.Compare(a, b);
        }

        return descending ? -result : result;
    }
}

/// <summary>Compares by a first comparer, then by the next on ties (ORDER BY a, b).</summary>
internal sealed class ThenComparer<T>(IComparer<T> first, IComparer<T> then) : IComparer<T>
{
    public int Compare(T? x, T? y)
    {
        var result = first.Compare(x, y);
        return result != 0 ? result : then.Compare(x, y);
    }
}

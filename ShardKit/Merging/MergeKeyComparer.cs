namespace ShardKit;

/// <summary>
/// Compares rows by one key, the way PostgreSQL's <c>ORDER BY</c> does: NULL sorts after every value ascending and
/// first descending unless <c>NULLS FIRST</c>/<c>NULLS LAST</c> says otherwise, text by code point (as
/// <c>COLLATE "C"</c>), NaN above every number; see <see cref="PostgresOrder"/>.
/// </summary>
internal sealed class MergeKeyComparer<T, TKey>(Func<T, TKey> key, IComparer<TKey>? comparer, bool descending, bool? nullsFirst = null)
    : IComparer<T>
{
    // Null means the default order, called directly below so the JIT can inline it for value-type keys.
    private readonly IComparer<TKey>? _comparer = comparer ?? PostgresOrder.For<TKey>();
    private readonly int _null = (nullsFirst ?? descending) ? -1 : 1; // where a NULL goes, whatever the direction

    public int Compare(T? x, T? y)
    {
        var a = key(x!);
        var b = key(y!);
        if (a is null)
        {
            return b is null ? 0 : _null;
        }

        if (b is null)
        {
            return -_null;
        }

        var result = _comparer is null ? Comparer<TKey>.Default.Compare(a, b) : _comparer.Compare(a, b);
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

namespace ShardKit;

/// <summary>
/// How per-shard scalar results (the first row of each shard's answer) become one value: a sum, a count, a minimum,
/// a maximum or an average. Start from <see cref="Merge"/>.
/// </summary>
public sealed class ScalarMerge<T>
{
    private readonly Func<IReadOnlyList<object?[]>, T> _combine;

    internal ScalarMerge(string kind, int columns, Func<IReadOnlyList<object?[]>, T> combine)
    {
        Kind = kind;
        Columns = columns;
        _combine = combine;
    }

    /// <summary>The merge as telemetry names it: sum, count, min, max, avg.</summary>
    public string Kind { get; }

    /// <summary>How many columns each shard's first row must have (2 for an average: the sum and the count).</summary>
    internal int Columns { get; }

    /// <summary>Combines the first row of each shard that answered (a shard with no row contributes nothing).</summary>
    internal T Combine(IReadOnlyList<object?[]> shardRows) => _combine(shardRows);
}

using System.Collections;

namespace ShardKit;

/// <summary>
/// The merged rows of a multi-shard query. With <see cref="FanOutPolicy.PartialResults"/> it also lists the shards
/// that failed, whose rows are missing; with complete results a failure throws instead, so the list is always whole.
/// </summary>
public sealed class FanOutResult<T> : IReadOnlyList<T>
{
    private readonly List<T> _rows;

    internal FanOutResult(List<T> rows, IReadOnlyList<ShardFailure> failures)
    {
        _rows = rows;
        Failures = failures;
    }

    /// <summary>The shards that failed, with their errors; empty when every shard answered.</summary>
    public IReadOnlyList<ShardFailure> Failures { get; }

    /// <summary>True when every targeted shard answered.</summary>
    public bool IsComplete => Failures.Count == 0;

    /// <inheritdoc />
    public int Count => _rows.Count;

    /// <inheritdoc />
    public T this[int index] => _rows[index];

    /// <inheritdoc />
    public IEnumerator<T> GetEnumerator() => _rows.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

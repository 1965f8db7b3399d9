using System.Runtime.CompilerServices;

namespace ShardKit;

/// <summary>
/// The merged rows of a multi-shard query, streamed: rows flow as the shards produce them and nothing is buffered
/// beyond what the merge needs (one row per shard for an ordered merge). Enumerate it once. With
/// <see cref="FanOutPolicy.PartialResults"/>, <see cref="Failures"/> lists the shards whose rows are missing once the
/// enumeration has ended.
/// </summary>
public sealed class FanOutStream<T> : IAsyncEnumerable<T>
{
    private readonly Func<Action<IReadOnlyList<ShardFailure>>, CancellationToken, IAsyncEnumerable<ShardRow<T>>> _rows;
    private int _enumerated;

    internal FanOutStream(Func<Action<IReadOnlyList<ShardFailure>>, CancellationToken, IAsyncEnumerable<ShardRow<T>>> rows) => _rows = rows;

    /// <summary>The shards that failed (partial results), known once the enumeration has ended.</summary>
    public IReadOnlyList<ShardFailure> Failures { get; private set; } = [];

    /// <summary>True when every targeted shard answered (meaningful once the enumeration has ended).</summary>
    public bool IsComplete => Failures.Count == 0;

    /// <summary>The same rows, each tagged with the name of its shard.</summary>
    public IAsyncEnumerable<ShardRow<T>> WithShardNames() => new Tagged(this);

    /// <inheritdoc />
    public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken cancellationToken = default) =>
        Untagged(cancellationToken).GetAsyncEnumerator(cancellationToken);

    private IAsyncEnumerable<ShardRow<T>> Start(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _enumerated, 1) == 1)
        {
            throw new InvalidOperationException("A fan-out stream can be enumerated once; run the query again for a second pass.");
        }

        return _rows(failures => Failures = failures, cancellationToken);
    }

    private async IAsyncEnumerable<T> Untagged([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var row in Start(cancellationToken).ConfigureAwait(false))
        {
            yield return row.Row;
        }
    }

    private sealed class Tagged(FanOutStream<T> stream) : IAsyncEnumerable<ShardRow<T>>
    {
        public IAsyncEnumerator<ShardRow<T>> GetAsyncEnumerator(CancellationToken cancellationToken = default) =>
            stream.Start(cancellationToken).GetAsyncEnumerator(cancellationToken);
    }
}

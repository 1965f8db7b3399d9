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
    public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken cancellationToken = default) => new Untagged(this, cancellationToken);

    private IAsyncEnumerable<ShardRow<T>> Start(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _enumerated, 1) == 1)
        {
            throw new InvalidOperationException("A fan-out stream can be enumerated once; run the query again for a second pass.");
        }

        return _rows(failures => Failures = failures, cancellationToken);
    }

    /// <summary>The rows without their shard names; a pass-through, so a buffered row costs no state machine here.</summary>
    private sealed class Untagged(FanOutStream<T> stream, CancellationToken cancellationToken) : IAsyncEnumerator<T>
    {
        private IAsyncEnumerator<ShardRow<T>>? _rows;

        public T Current => _rows!.Current.Row;

        public ValueTask<bool> MoveNextAsync()
        {
            // Started on the first move, as an async iterator would: a second enumeration fails there, not before.
            _rows ??= stream.Start(cancellationToken).GetAsyncEnumerator(cancellationToken);
            return _rows.MoveNextAsync();
        }

        public ValueTask DisposeAsync() => _rows?.DisposeAsync() ?? ValueTask.CompletedTask;
    }

    private sealed class Tagged(FanOutStream<T> stream) : IAsyncEnumerable<ShardRow<T>>
    {
        public IAsyncEnumerator<ShardRow<T>> GetAsyncEnumerator(CancellationToken cancellationToken = default) =>
            stream.Start(cancellationToken).GetAsyncEnumerator(cancellationToken);
    }
}

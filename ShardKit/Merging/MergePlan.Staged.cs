
namespace ShardKit;

public sealed partial class MergePlan<T>
{
    /// <summary>
    /// The merge (ordered or arrival order) with the later stages inline, as a hand-written enumerator: a row already
    /// buffered by its shard passes through without any asynchronous state machine, which is most of the cost per row
    /// otherwise.
    /// </summary>
    private sealed class StagedRows(MergePlan<T> plan, IMergeCursor<T> merge, CancellationToken cancellationToken)
        : IAsyncEnumerable<ShardRow<T>>, IAsyncEnumerator<ShardRow<T>>
    {
        private readonly Stages _stages = new(plan);
        private readonly IMergeCursor<T> _merge = merge;
        private CancellationToken _token = cancellationToken;
        private int _started;

        public ShardRow<T> Current { get; private set; }

        public IAsyncEnumerator<ShardRow<T>> GetAsyncEnumerator(CancellationToken cancellationToken = default)
        {
            if (Interlocked.Exchange(ref _started, 1) != 0)
            {
                throw new InvalidOperationException("A merge can be enumerated once.");
            }

            if (cancellationToken.CanBeCanceled)
            {
                _token = cancellationToken;
            }

            return this;
        }

        public ValueTask<bool> MoveNextAsync()
        {
            while (!_stages.Done)
            {
                var next = _merge.MoveNextAsync();
                if (!next.IsCompletedSuccessfully)
                {
                    return MoveNextSlowAsync(next);
                }

                if (!next.Result)
                {
                    return new ValueTask<bool>(false);
                }

                if (Admit())
                {
                    return new ValueTask<bool>(true);
                }
            }

            return new ValueTask<bool>(false);
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;

        private async ValueTask<bool> MoveNextSlowAsync(ValueTask<bool> pending)
        {
            var more = await pending.ConfigureAwait(false);
            while (more)
            {
                if (Admit())
                {
                    return true;
                }

                if (_stages.Done)
                {
                    return false;
                }

                more = await _merge.MoveNextAsync().ConfigureAwait(false);
            }

            return false;
        }

        private bool Admit()
        {
            var row = _merge.Current;
            if (!_stages.Admit(row.Row))
            {
                return false;
            }

            Current = row;
            if ((_stages.Taken & 0x3FF) == 0)
            {
                _token.ThrowIfCancellationRequested();
            }

            return true;
        }
    }
}

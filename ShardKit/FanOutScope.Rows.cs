using System.Diagnostics;
using Dapper;
using Npgsql;

namespace ShardKit;

public sealed partial class FanOutScope
{
    /// <summary>
    /// One multi-shard read: on the first move it starts every shard's query at once and merges their streams by the
    /// plan; at the end (or on disposal) it cancels whatever is still running and reports the failures. A hand-written
    /// enumerator, so a row already buffered reaches the caller without an asynchronous state machine.
    /// </summary>
    private sealed class MergedRows<T>(FanOutScope scope, CommandDefinition command, MergePlan<T> plan, string operation,
        Action<IReadOnlyList<ShardFailure>> reportFailures, CancellationToken cancellationToken, bool wholeShards,
        Func<NpgsqlConnection, CommandDefinition, CancellationToken, IAsyncEnumerable<T>>? read)
        : IAsyncEnumerable<ShardRow<T>>, IAsyncEnumerator<ShardRow<T>>
    {
        private CancellationTokenSource? _cancel;
        private Activity? _activity;
        private FanOutRun? _run;
        private ShardRowStream<T>[]? _streams;
        private IAsyncEnumerator<ShardRow<T>>? _merge;
        private long _merged;
        private bool _finished;
        private CancellationToken _enumeratorToken;

        public ShardRow<T> Current => _merge!.Current;

        public IAsyncEnumerator<ShardRow<T>> GetAsyncEnumerator(CancellationToken token = default)
        {
            _enumeratorToken = token; // as [EnumeratorCancellation] does: either token cancels
            return this;
        }

        public ValueTask<bool> MoveNextAsync()
        {
            if (_merge is not null && !_finished)
            {
                ValueTask<bool> next;
                try
                {
                    next = _merge.MoveNextAsync();
                }
                catch (Exception e)
                {
                    next = ValueTask.FromException<bool>(e);
                }

                if (next.IsCompletedSuccessfully && next.Result)
                {
                    _merged++;
                    return next;
                }

                return MoveNextSlowAsync(next);
            }

            return MoveNextSlowAsync(null);
        }

        public ValueTask DisposeAsync() => FinishAsync();

        /// <summary>
        /// Every merged row into <paramref name="rows"/>. When each shard is read whole and the plan only concatenates,
        /// the shards' lists are appended as they complete, with no merge per row; otherwise the merge runs over the
        /// shards' buffers, and the list is sized once the first shards are in.
        /// </summary>
        public async Task CollectAsync<TRow>(List<TRow> rows, Func<ShardRow<T>, TRow> select)
        {
            if (!wholeShards || !plan.IsConcatOnly)
            {
                while (await MoveNextAsync().ConfigureAwait(false))
                {
                    if (_merged == 1 && wholeShards)
                    {
                        rows.EnsureCapacity(_streams!.Sum(s => s.BufferedRows) + _streams!.Length);
                    }

                    rows.Add(select(Current));
                }

                return;
            }

            try
            {
                Start();
                foreach (var (shard, shardRows) in await ReadShardsAsync().ConfigureAwait(false))
                {
                    rows.EnsureCapacity(rows.Count + shardRows.Count);
                    foreach (var row in shardRows)
                    {
                        rows.Add(select(new ShardRow<T>(shard, row)));
                    }
                }

                _merged = rows.Count;
            }
            finally
            {
                await FinishAsync().ConfigureAwait(false);
            }
        }

        /// <summary>Each shard's rows in the order the shards complete; the first failure (as the policy made it) ends the wait.</summary>
        private async Task<List<(string Shard, List<T> Rows)>> ReadShardsAsync()
        {
            var reads = _streams!.Select(s => s.ReadWholeAsync()).ToList();
            var done = new List<(string, List<T>)>(reads.Count);
            while (reads.Count > 0)
            {
                var read = await Task.WhenAny(reads).WaitAsync(_cancel!.Token).ConfigureAwait(false);
                reads.Remove(read);
                done.Add(await read.ConfigureAwait(false));
            }

            return done;
        }

        private async ValueTask<bool> MoveNextSlowAsync(ValueTask<bool>? pending)
        {
            if (_finished)
            {
                return false;
            }

            try
            {
                if (_merge is null)
                {
                    Start(); // here, in an async method: the fan-out's activity is current for the shards' spans only
                }

                if (await (pending ?? _merge!.MoveNextAsync()).ConfigureAwait(false))
                {
                    _merged++;
                    return true;
                }
            }
            catch (Exception)
            {
                await FinishAsync().ConfigureAwait(false);
                throw;
            }

            await FinishAsync().ConfigureAwait(false);
            return false;
        }

        private void Start()
        {
            _cancel = CancellationTokenSource.CreateLinkedTokenSource(command.CancellationToken, cancellationToken, _enumeratorToken);
            _activity = ShardKitTelemetry.StartFanOut(operation, scope._shards.Length, plan.Kind);
            _run = new FanOutRun(scope._connection.Session, scope._shards, scope.Options, operation, command.CommandText, _cancel.Token);
            if (wholeShards)
            {
                _run.ReadShardsWhole();
            }

            _streams = scope.OpenStreams(_run, command, read);
            var sources = _streams.Select(s => new MergeSource<T>(s.Shard, s)).ToArray();
            // The merge watches only the caller's token: a shard failure or a timeout cancels the run, and the streams
            // turn that into the policy's error (or a missing shard), which the merge must see rather than a bare cancellation.
            _merge = plan.MergeAsync(sources, _cancel.Token).GetAsyncEnumerator(_cancel.Token);
        }

        private async ValueTask FinishAsync()
        {
            if (_finished)
            {
                return;
            }

            _finished = true;
            try
            {
                if (_merge is not null)
                {
                    await _merge.DisposeAsync().ConfigureAwait(false);
                }

                if (_streams is not null)
                {
                    // In parallel: each stream stopped early may need a round trip to cancel its query.
                    await Task.WhenAll(_streams.Select(s => s.DisposeAsync().AsTask())).ConfigureAwait(false);
                }

                if (_run is not null)
                {
                    reportFailures(_run.Failures);
                    ShardKitTelemetry.RecordRowsMerged(_merged, plan.Kind, operation);
                    _activity?.SetTag(ShardKitTelemetry.RowsTag, _merged);
                }
            }
            finally
            {
                _run?.Dispose();
                _activity?.Dispose();
                _cancel?.Dispose();
            }
        }
    }
}

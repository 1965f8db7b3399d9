namespace ShardKit;

/// <summary>
/// Concatenates the shards' rows in the order they arrive: whichever shard has a row ready is read next, so a slow
/// shard never holds back the others (and a first match can stop the rest early). Each shard has at most one read in
/// flight; the shard whose row was returned last is advanced on the next call, so a satisfied limit reads no further.
/// </summary>
internal sealed class ArrivalMerge<T>(MergeSource<T>[] sources, CancellationToken cancellationToken) : IMergeCursor<T>
{
    private readonly Task<bool>?[] _pending = new Task<bool>?[sources.Length]; // null once the shard has ended
    private int _active = sources.Length;
    private bool _started;
    private int _next;
    private int _last = -1;

    public ShardRow<T> Current { get; private set; }

    public ValueTask<bool> MoveNextAsync()
    {
        if (!_started)
        {
            _started = true;
            for (var i = 0; i < sources.Length; i++)
            {
                _pending[i] = Watched(sources[i].AdvanceAsync().AsTask()); // a completed read is a cached task: no allocation
            }
        }
        else if (_last >= 0)
        {
            _pending[_last] = Watched(sources[_last].AdvanceAsync().AsTask());
            _last = -1;
        }

        while (_active > 0)
        {
            var ready = NextReady();
            if (ready < 0)
            {
                return WaitThenMoveAsync();
            }

            // Round robin among ready shards, so one fast shard does not starve the others' buffers.
            _next = (ready + 1) % sources.Length;
            var read = _pending[ready]!;
            if (!read.IsCompletedSuccessfully)
            {
                return new ValueTask<bool>(read); // the shard's failure, as the policy made it
            }

            if (!read.Result)
            {
                _pending[ready] = null;
                _active--;
                continue;
            }

            var source = sources[ready];
            Current = new ShardRow<T>(source.Shard, source.Rows.Current);
            _last = ready;
            return new ValueTask<bool>(true);
        }

        return new ValueTask<bool>(false);
    }

    // A read the merge may never take: when one shard fails the run, the others' reads fail with the same error and the
    // merge throws the first; the rest are observed here, not left to the finalizer as unobserved task exceptions.
    private static Task<bool> Watched(Task<bool> read)
    {
        if (!read.IsCompletedSuccessfully)
        {
            read.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
        }

        return read;
    }

    private async ValueTask<bool> WaitThenMoveAsync()
    {
        await Task.WhenAny(_pending.OfType<Task<bool>>()).WaitAsync(cancellationToken).ConfigureAwait(false);
        return await MoveNextAsync().ConfigureAwait(false);
    }

    private int NextReady()
    {
        for (var n = 0; n < _pending.Length; n++)
        {
            var i = (_next + n) % _pending.Length;
            if (_pending[i] is { IsCompleted: true })
            {
                return i;
            }
        }

        return -1;
    }
}

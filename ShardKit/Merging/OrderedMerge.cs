namespace ShardKit.Merging;

/// <summary>
/// The k-way merge of shard streams that are each already sorted: a binary heap holds one row per shard, so memory
/// is proportional to the number of shards, never to the rows. Every row is checked against the previous row of its
/// shard; a shard out of order raises <see cref="ShardMergeOrderException"/> instead of a silently wrong result.
/// Ties between shards go to the shard listed first, so the output is deterministic. A hand-written cursor rather
/// than an async iterator: rows already buffered come through without any asynchronous machinery.
/// </summary>
internal sealed class OrderedMerge<T>
{
    private readonly MergeSource<T>[] _sources;
    private readonly IComparer<T> _order;
    private readonly T[] _heads;
    private readonly long[] _counts;
    private readonly int[] _heap;
    private int _size = -1; // -1: not started
    private int _top = -1; // the shard whose row was returned last, to advance on the next call

    public OrderedMerge(MergeSource<T>[] sources, IComparer<T> order)
    {
        _sources = sources;
        _order = order;
        _heads = new T[sources.Length];
        _counts = new long[sources.Length];
        _heap = new int[sources.Length];
    }

    public ShardRow<T> Current => new(_sources[_heap[0]].Shard, _heads[_heap[0]]);

    public ValueTask<bool> MoveNextAsync()
    {
        if (_size < 0)
        {
            return StartAsync();
        }

        if (_top >= 0)
        {
            var next = _sources[_top].AdvanceAsync();
            if (!next.IsCompletedSuccessfully)
            {
                return AdvanceSlowAsync(next);
            }

            Advanced(next.Result);
        }

        return new ValueTask<bool>(Emit());
    }

    private async ValueTask<bool> AdvanceSlowAsync(ValueTask<bool> next)
    {
        Advanced(await next.ConfigureAwait(false));
        return Emit();
    }

    private async ValueTask<bool> StartAsync()
    {
        _size = 0;
        // Every shard is already running; wait for each one's first row in turn.
        for (var i = 0; i < _sources.Length; i++)
        {
            if (await _sources[i].AdvanceAsync().ConfigureAwait(false))
            {
                _heads[i] = _sources[i].Rows.Current;
                Push(i);
            }
        }

        return Emit();
    }

    private bool Emit()
    {
        if (_size == 0)
        {
            _top = -1;
            return false;
        }

        _top = _heap[0];
        _counts[_top]++;
        return true;
    }

    /// <summary>The shard at the top of the heap moved on: re-place it with its new row, or drop it when it ended.</summary>
    private void Advanced(bool more)
    {
        var shard = _top;
        if (!more)
        {
            _heap[0] = _heap[--_size];
            SiftDown();
            return;
        }

        var row = _sources[shard].Rows.Current;
        if (_order.Compare(_heads[shard], row) > 0)
        {
            throw new ShardMergeOrderException(_sources[shard].Shard, _counts[shard]);
        }

        _heads[shard] = row;
        SiftDown();
    }

    private void Push(int shard)
    {
        var i = _size++;
        _heap[i] = shard;
        while (i > 0)
        {
            var parent = (i - 1) / 2;
            if (Less(_heap[parent], _heap[i]))
            {
                break;
            }

            (_heap[parent], _heap[i]) = (_heap[i], _heap[parent]);
            i = parent;
        }
    }

    private void SiftDown()
    {
        var i = 0;
        while (true)
        {
            var left = (2 * i) + 1;
            if (left >= _size)
            {
                return;
            }

            var child = left + 1 < _size && Less(_heap[left + 1], _heap[left]) ? left + 1 : left;
            if (Less(_heap[i], _heap[child]))
            {
                return;
            }

            (_heap[i], _heap[child]) = (_heap[child], _heap[i]);
            i = child;
        }
    }

    private bool Less(int a, int b)
    {
        var result = _order.Compare(_heads[a], _heads[b]);
        return result < 0 || (result == 0 && a < b);
    }
}

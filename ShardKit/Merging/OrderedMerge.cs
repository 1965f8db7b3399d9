namespace ShardKit;

/// <summary>
/// The k-way merge of shard streams that are each already sorted: a tournament (loser) tree holds one row per shard,
/// so memory is proportional to the number of shards, never to the rows, and each row costs log2(shards) comparisons. Every row is checked against the previous row of its
/// shard; a shard out of order raises <see cref="ShardMergeOrderException"/> instead of a silently wrong result.
/// Ties between shards go to the shard listed first, so the output is deterministic. A hand-written cursor rather
/// than an async iterator: rows already buffered come through without any asynchronous machinery.
/// </summary>
internal sealed class OrderedMerge<T> : IMergeCursor<T>
{
    private readonly MergeSource<T>[] _sources;
    private readonly IComparer<T> _order;
    private readonly T[] _heads;
    private readonly long[] _counts;
    private readonly bool[] _ended;
    private readonly int[] _losers; // [0] is the winner; [1..k) the loser of each match; leaves are k..2k
    private bool _started;
    private int _top = -1; // the shard whose row was returned last, to advance on the next call

    public OrderedMerge(MergeSource<T>[] sources, IComparer<T> order)
    {
        _sources = sources;
        _order = order;
        _heads = new T[sources.Length];
        _counts = new long[sources.Length];
        _ended = new bool[sources.Length];
        _losers = new int[sources.Length];
    }

    public ShardRow<T> Current => new(_sources[_losers[0]].Shard, _heads[_losers[0]]);

    public ValueTask<bool> MoveNextAsync()
    {
        if (!_started)
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
        _started = true;
        // Every shard's first row at once: a shard that fails at once is seen at once (and cancels the others) instead
        // of after every slower shard listed before it.
        var firsts = _sources.Select(source => source.AdvanceAsync().AsTask()).ToArray();
        await Task.WhenAll(firsts).ConfigureAwait(false);
        for (var i = 0; i < _sources.Length; i++)
        {
            if (firsts[i].Result)
            {
                _heads[i] = _sources[i].Rows.Current;
            }
            else
            {
                _ended[i] = true;
            }
        }

        _losers[0] = Play(1);
        return Emit();
    }

    private bool Emit()
    {
        _top = _losers[0];
        if (_ended[_top])
        {
            _top = -1;
            return false;
        }

        _counts[_top]++;
        return true;
    }

    /// <summary>The shard of the last row moved on: check its order, then replay its matches up to the root.</summary>
    private void Advanced(bool more)
    {
        var shard = _top;
        if (!more)
        {
            _ended[shard] = true;
        }
        else
        {
            var row = _sources[shard].Rows.Current;
            if (_order.Compare(_heads[shard], row) > 0)
            {
                throw new ShardMergeOrderException(_sources[shard].Shard, _counts[shard]);
            }

            _heads[shard] = row;
        }

        var winner = shard;
        for (var node = (shard + _sources.Length) / 2; node > 0; node /= 2)
        {
            if (Beats(_losers[node], winner))
            {
                (_losers[node], winner) = (winner, _losers[node]);
            }
        }

        _losers[0] = winner;
    }

    /// <summary>Plays the matches below <paramref name="node"/>, keeping each loser, and returns the winner.</summary>
    private int Play(int node)
    {
        if (node >= _sources.Length)
        {
            return node - _sources.Length;
        }

        var a = Play(2 * node);
        var b = Play((2 * node) + 1);
        if (Beats(a, b))
        {
            _losers[node] = b;
            return a;
        }

        _losers[node] = a;
        return b;
    }

    /// <summary>Whether shard a's row comes first; an ended shard never does, and ties go to the shard listed first.</summary>
    private bool Beats(int a, int b)
    {
        if (_ended[a] || _ended[b])
        {
            return !_ended[a];
        }

        var result = _order.Compare(_heads[a], _heads[b]);
        return result < 0 || (result == 0 && a < b);
    }
}

using System.Runtime.CompilerServices;

namespace ShardKit.Merging;

/// <summary>
/// The k-way merge of shard streams that are each already sorted: a binary heap holds one row per shard, so memory
/// is proportional to the number of shards, never to the rows. Every row is checked against the previous row of its
/// shard; a shard out of order raises <see cref="ShardMergeOrderException"/> instead of a silently wrong result.
/// Ties between shards go to the shard listed first, so the output is deterministic.
/// </summary>
internal static class OrderedMerge
{
    public static async IAsyncEnumerable<ShardRow<T>> MergeAsync<T>(MergeSource<T>[] sources, IComparer<T> order,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var heads = new T[sources.Length];
        var counts = new long[sources.Length];
        var heap = new Heap<T>(heads, order, sources.Length);

        // Every shard is already running; wait for each one's first row in turn.
        for (var i = 0; i < sources.Length; i++)
        {
            if (await sources[i].AdvanceAsync().ConfigureAwait(false))
            {
                heads[i] = sources[i].Rows.Current;
                heap.Push(i);
            }
        }

        while (heap.Count > 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var top = heap.Peek();
            var source = sources[top];
            yield return new ShardRow<T>(source.Shard, heads[top]);
            counts[top]++;
            if (await source.AdvanceAsync().ConfigureAwait(false))
            {
                var row = source.Rows.Current;
                if (order.Compare(heads[top], row) > 0)
                {
                    throw new ShardMergeOrderException(source.Shard, counts[top]);
                }

                heads[top] = row;
                heap.ReplaceTop(top);
            }
            else
            {
                heap.Pop();
            }
        }
    }

    /// <summary>A min-heap of shard indexes keyed by each shard's current row, ties broken by shard index.</summary>
    private sealed class Heap<T>(T[] heads, IComparer<T> order, int capacity)
    {
        private readonly int[] _items = new int[capacity];

        public int Count { get; private set; }

        public int Peek() => _items[0];

        public void Push(int shard)
        {
            var i = Count++;
            _items[i] = shard;
            while (i > 0)
            {
                var parent = (i - 1) / 2;
                if (Less(_items[parent], _items[i]))
                {
                    break;
                }

                (_items[parent], _items[i]) = (_items[i], _items[parent]);
                i = parent;
            }
        }

        public void Pop()
        {
            _items[0] = _items[--Count];
            SiftDown();
        }

        public void ReplaceTop(int shard)
        {
            _items[0] = shard;
            SiftDown();
        }

        private void SiftDown()
        {
            var i = 0;
            while (true)
            {
                var left = (2 * i) + 1;
                if (left >= Count)
                {
                    return;
                }

                var child = left + 1 < Count && Less(_items[left + 1], _items[left]) ? left + 1 : left;
                if (Less(_items[i], _items[child]))
                {
                    return;
                }

                (_items[i], _items[child]) = (_items[child], _items[i]);
                i = child;
            }
        }

        private bool Less(int a, int b)
        {
            var result = order.Compare(heads[a], heads[b]);
            return result < 0 || (result == 0 && a < b);
        }
    }
}

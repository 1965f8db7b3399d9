using System.Buffers;

namespace ShardKit;

/// <summary>Rows bound for one shard with their positions in the input; the arrays are pooled and given back once written.</summary>
internal sealed class RowBatch<T>
{
    private RowBatch(int size)
    {
        Rows = ArrayPool<T>.Shared.Rent(size);
        Indexes = ArrayPool<long>.Shared.Rent(size);
        Capacity = size;
    }

    public T[] Rows { get; }

    public long[] Indexes { get; }

    public int Count { get; private set; }

    public int Capacity { get; }

    public bool IsFull => Count == Capacity;

    public static RowBatch<T> Rent(int size) => new(size);

    public void Add(T row, long index)
    {
        Rows[Count] = row;
        Indexes[Count] = index;
        Count++;
    }

    /// <summary>Gives the arrays back, cleared of row references so the pool does not keep rows alive.</summary>
    public void Return()
    {
        ArrayPool<T>.Shared.Return(Rows, clearArray: System.Runtime.CompilerServices.RuntimeHelpers.IsReferenceOrContainsReferences<T>());
        ArrayPool<long>.Shared.Return(Indexes);
    }
}

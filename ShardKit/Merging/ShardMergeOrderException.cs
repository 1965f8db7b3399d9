namespace ShardKit;

/// <summary>
/// A shard returned rows out of the order the merge plan merges by, so an ordered merge cannot be correct. The
/// query's <c>ORDER BY</c> does not match the plan's keys or directions.
/// </summary>
public sealed class ShardMergeOrderException : ShardKitException
{
    internal ShardMergeOrderException(string shard, long rowIndex)
        : base($"Shard '{shard}' returned row {rowIndex} before a row that sorts after it in the merge order. " +
               "Make the query's ORDER BY match the merge plan: the same keys, in the same order and directions " +
               "(text keys: ORDER BY col COLLATE \"C\" with the default comparer, which orders by code point; NULLs sort last " +
               "ascending and first descending, as in PostgreSQL, unless the key says nullsFirst: true or false for NULLS FIRST/LAST).")
    {
        Shard = shard;
        RowIndex = rowIndex;
    }

    /// <summary>The shard whose rows are out of order.</summary>
    public string Shard { get; }

    /// <summary>The zero-based index, within that shard's rows, of the first row found out of order.</summary>
    public long RowIndex { get; }
}

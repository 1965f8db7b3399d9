namespace ShardKit;

/// <summary>The outcome of a bulk load that committed on every shard.</summary>
public sealed class BulkInsertResult
{
    internal BulkInsertResult(IReadOnlyDictionary<string, long> rowsPerShard)
    {
        RowsPerShard = rowsPerShard;
        Total = rowsPerShard.Values.Sum();
    }

    /// <summary>Rows written to each shard, by shard name; every shard of the map is listed, with zero when it got none.</summary>
    public IReadOnlyDictionary<string, long> RowsPerShard { get; }

    /// <summary>Rows written in all.</summary>
    public long Total { get; }
}

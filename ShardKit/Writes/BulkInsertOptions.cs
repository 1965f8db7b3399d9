namespace ShardKit;

/// <summary>How <see cref="ShardedConnection.BulkInsertAsync{T}(string, IEnumerable{T}, BulkInsertOptions?, CancellationToken)"/> loads rows.</summary>
public sealed record BulkInsertOptions
{
    /// <summary>The defaults: every mapped column, batches of 1,000 rows, 4 batches buffered per shard.</summary>
    public static BulkInsertOptions Default { get; } = new();

    /// <summary>
    /// The columns to load, in this order; null for every mapped property of the row type. Each name must be the
    /// column of a mapped property (snake_case of its name, or the name its <see cref="ShardColumnAttribute"/> or
    /// <see cref="ShardKeyAttribute.Column"/> gives).
    /// </summary>
    public IReadOnlyList<string>? Columns { get; init; }

    /// <summary>Rows per batch handed from the reader of the input to a shard's COPY.</summary>
    public int BatchSize { get; init; } = 1000;

    /// <summary>
    /// Batches waiting per shard. The input is read at most <c>BatchSize × (ChannelCapacity + 2)</c> rows ahead of
    /// each shard's COPY (a full channel, the batch being filled and the batch being written), so memory stays
    /// bounded whatever the input's length.
    /// </summary>
    public int ChannelCapacity { get; init; } = 4;

    /// <summary>
    /// Makes the load all-or-nothing across shards even when a shard or the app fails during the commit: the load
    /// runs in a distributed transaction and commits with two-phase commit (a decision logged on the coordinator,
    /// finished by <see cref="ShardedDataSource.RecoverAsync"/> after a crash). It needs
    /// <c>max_prepared_transactions</c> on every shard. Without it every shard's COPY runs in its own transaction
    /// and all of them commit together only after every COPY succeeded; a shard lost during that short commit step
    /// is reported by <see cref="BulkInsertException.CommittedShards"/>. A load started inside an open distributed
    /// transaction always joins it, and commits with it.
    /// </summary>
    public bool AllOrNothing { get; init; }

    /// <summary>
    /// Rows per COPY statement on a shard: each shard's COPY is completed and a new one begun after this many rows, in
    /// the same transaction, so the input positions of the rows in flight (8 bytes each) are all a load keeps to name a
    /// row the server refuses. Internal so tests can make it small.
    /// </summary>
    internal int RowsPerCopy { get; init; } = 32_768;

    internal void Validate()
    {
        if (BatchSize < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 1.");
        }

        if (ChannelCapacity < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(ChannelCapacity), ChannelCapacity, "ChannelCapacity must be at least 1.");
        }

        if (RowsPerCopy < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(RowsPerCopy), RowsPerCopy, "RowsPerCopy must be at least 1.");
        }

        if (Columns is { Count: 0 })
        {
            throw new ArgumentException("Columns names no column; list at least one, or leave it null for every mapped property.", nameof(Columns));
        }
    }
}

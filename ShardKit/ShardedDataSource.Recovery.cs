namespace ShardKit;

public sealed partial class ShardedDataSource
{
    /// <summary>
    /// Finishes distributed transactions left prepared by a crash or an outage: commits those whose decision log says
    /// commit, rolls back those with no decision once older than <see cref="DistributedTransactionOptions.AbortPreparedAfter"/>,
    /// and removes decisions no shard needs any more. Idempotent, and safe to run at any time from any number of
    /// processes, concurrently with new transactions. Unreachable shards are reported, not thrown; run it again later.
    /// </summary>
    public Task<RecoveryReport> RecoverAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Shards.IsDisposed, this);
        return TransactionRecovery.RunAsync(Shards, Distributed.Settings, cancellationToken);
    }
}

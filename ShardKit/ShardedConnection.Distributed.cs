using System.Data;
using Npgsql;

namespace ShardKit;

public sealed partial class ShardedConnection
{
    /// <summary>The open distributed transaction, if any.</summary>
    public DistributedTransaction? CurrentDistributedTransaction => Session.Enlistment as DistributedTransaction;

    /// <summary>
    /// Starts a transaction that may span shards. Until it ends, commands route by key as usual (scopes and split key
    /// lists included) and each shard reached joins it with its own transaction; <see cref="DistributedTransaction.CommitAsync"/>
    /// then commits all of them atomically with two-phase commit (plain commit when only one shard was touched). Every
    /// shard needs <c>max_prepared_transactions</c> &gt; 0, and recovery (<see cref="ShardedDataSource.RecoverAsync"/>)
    /// must run somewhere to finish transactions interrupted by a crash.
    /// </summary>
    public Task<DistributedTransaction> BeginDistributedTransactionAsync(IsolationLevel isolationLevel = IsolationLevel.ReadCommitted,
        CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return Task.FromResult(BeginDistributedTransaction(isolationLevel));
    }

    /// <summary>Starts a distributed transaction; see <see cref="BeginDistributedTransactionAsync"/>.</summary>
    public DistributedTransaction BeginDistributedTransaction(IsolationLevel isolationLevel = IsolationLevel.ReadCommitted)
    {
        ObjectDisposedException.ThrowIf(Session.IsDisposed, this);
        ThrowIfInTransaction();
        DataSource.Distributed.Begun();
        return new DistributedTransaction(Session, DataSource.Distributed, isolationLevel);
    }
}

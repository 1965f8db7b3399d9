using System.Data;
using Npgsql;

namespace ShardKit;

public sealed partial class ShardedConnection
{
    private DistributedTransaction? _distributed;

    /// <summary>The open distributed transaction, if any.</summary>
    public DistributedTransaction? CurrentDistributedTransaction => _distributed;

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
        ObjectDisposedException.ThrowIf(_disposed, this);
        ThrowIfInTransaction();
        if (_transaction is not null)
        {
            throw new InvalidOperationException(
                $"A transaction is already open on shard '{_transaction.Shard}'; commit or roll it back before starting another.");
        }

        DataSource.OnDistributedBegun();
        return _distributed = new DistributedTransaction(this, isolationLevel);
    }

    // A lock wait that ran out inside a distributed transaction is most likely a deadlock across shards, which no server
    // detects: the caller gets a typed, retryable error naming the shard instead of the server's bare 55P03.
    private bool IsDistributedLockTimeout(PostgresException error) =>
        _distributed is { IsActive: true } && DistributedLockTimeoutException.Matches(error);

    private DistributedLockTimeoutException DistributedLockTimeout(int shard, PostgresException error) =>
        new(DataSource.Map.ShardNames[shard], DataSource.Distributed.LockTimeout, error);

    internal void OnDistributedEnded(DistributedTransaction transaction)
    {
        if (ReferenceEquals(_distributed, transaction))
        {
            _distributed = null;
        }
    }
}

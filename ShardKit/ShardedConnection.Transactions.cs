using System.Data;
using Npgsql;

namespace ShardKit;

public sealed partial class ShardedConnection
{
    internal async Task<ShardTransaction> BeginTransactionAsync(int shard, IsolationLevel isolationLevel, CancellationToken cancellationToken)
    {
        ThrowIfInTransaction();
        using var operation = EnterOperation();
        var connection = await OpenShardAsync(shard, cancellationToken).ConfigureAwait(false);
        var inner = await connection.BeginTransactionAsync(isolationLevel, cancellationToken).ConfigureAwait(false);
        return _transaction = new ShardTransaction(this, shard, inner);
    }

    internal ShardTransaction BeginTransaction(int shard, IsolationLevel isolationLevel)
    {
        ThrowIfInTransaction();
        using var operation = EnterOperation();
        var inner = OpenShard(shard).BeginTransaction(isolationLevel);
        return _transaction = new ShardTransaction(this, shard, inner);
    }

    internal void OnTransactionEnded(ShardTransaction transaction)
    {
        if (ReferenceEquals(_transaction, transaction))
        {
            _transaction = null;
        }
    }

    /// <summary>The Npgsql transaction to attach to a command on <paramref name="shard"/>, if one is open there.</summary>
    internal NpgsqlTransaction? TransactionOn(int shard) =>
        _transaction is not null && _transaction.ShardIndex == shard ? _transaction.Inner : null;

    /// <summary>
    /// Inside a single-shard transaction every command must target that shard; anything else is refused before it
    /// reaches a database, so no write lands outside the transaction.
    /// </summary>
    internal void CheckAgainstTransaction(in Route route, IDbTransaction? given)
    {
        if (given is not null && !ReferenceEquals(given, _transaction) && !ReferenceEquals(given, _transaction?.Inner))
        {
            throw new ShardRoutingException(
                "The transaction passed to this command does not belong to this ShardedConnection's open transaction; " +
                "pass the ShardTransaction returned by BeginTransaction, or none.");
        }

        if (_transaction is null)
        {
            return;
        }

        var names = DataSource.Map.ShardNames;
        if (route.IsSingle && route.Shard != _transaction.ShardIndex)
        {
            throw OutsideTransaction(names[route.Shard]);
        }

        if (!route.IsSingle)
        {
            foreach (var part in route.Parts!)
            {
                if (part.Shard != _transaction.ShardIndex)
                {
                    throw OutsideTransaction(names[part.Shard]);
                }
            }
        }
    }

    private ShardRoutingException OutsideTransaction(string target) => new(
        $"This command routes to shard '{target}' but the open transaction is pinned to shard '{_transaction!.Shard}'. " +
        "A single-shard transaction cannot touch another shard: commit it first, or use a distributed transaction.");

    private void ThrowIfInTransaction()
    {
        if (_distributed is not null)
        {
            throw new InvalidOperationException(
                "A distributed transaction is already open on this connection; commit or roll it back before starting another.");
        }

        if (_transaction is not null)
        {
            throw new InvalidOperationException(
                $"A transaction is already open on shard '{_transaction.Shard}'; commit or roll it back before starting another.");
        }
    }
}

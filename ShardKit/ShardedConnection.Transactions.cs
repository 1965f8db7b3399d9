using System.Data;
using Npgsql;

namespace ShardKit;

public sealed partial class ShardedConnection
{
    internal async Task<ShardTransaction> BeginTransactionAsync(int shard, IsolationLevel isolationLevel, CancellationToken cancellationToken)
    {
        ThrowIfInTransaction();
        using var operation = EnterOperation();
        var connection = await Session.OpenAsync(shard, cancellationToken).ConfigureAwait(false);
        var inner = await connection.BeginTransactionAsync(isolationLevel, cancellationToken).ConfigureAwait(false);
        return new ShardTransaction(Session, shard, inner);
    }

    internal ShardTransaction BeginTransaction(int shard, IsolationLevel isolationLevel)
    {
        ThrowIfInTransaction();
        using var operation = EnterOperation();
        var inner = Session.Open(shard).BeginTransaction(isolationLevel);
        return new ShardTransaction(Session, shard, inner);
    }

    internal NpgsqlTransaction? TransactionOn(int shard) => Session.TransactionOn(shard);

    /// <summary>
    /// Inside a single-shard transaction every command must target that shard; anything else is refused before it
    /// reaches a database, so no write lands outside the transaction.
    /// </summary>
    internal void CheckAgainstTransaction(in Route route, IDbTransaction? given)
    {
        var transaction = CurrentTransaction;
        if (given is not null && !ReferenceEquals(given, transaction) && !ReferenceEquals(given, transaction?.Inner))
        {
            throw new ShardRoutingException(
                "The transaction passed to this command does not belong to this ShardedConnection's open transaction; " +
                "pass the ShardTransaction returned by BeginTransaction, or none.");
        }

        if (transaction is null)
        {
            return;
        }

        var names = DataSource.Map.ShardNames;
        if (route.IsSingle && route.Shard != transaction.ShardIndex)
        {
            throw OutsideTransaction(names[route.Shard]);
        }

        if (!route.IsSingle)
        {
            foreach (var part in route.Parts!)
            {
                if (part.Shard != transaction.ShardIndex)
                {
                    throw OutsideTransaction(names[part.Shard]);
                }
            }
        }
    }

    private ShardKitException OutsideTransaction(string target) =>
        DataSource.Map.Epoch != CurrentTransaction!.MapEpoch
            ? new ShardBucketMovedException(
                $"This command routes to shard '{target}', but the open transaction is on shard '{CurrentTransaction.Shard}' and the shard " +
                "map changed since it began (a bucket moved). Roll the transaction back and run it again: it will begin on the new owner.")
            : new ShardRoutingException(
                $"This command routes to shard '{target}' but the open transaction is pinned to shard '{CurrentTransaction.Shard}'. " +
                "A single-shard transaction cannot touch another shard: commit it first, or use a distributed transaction.");

    private void ThrowIfInTransaction()
    {
        if (Session.Enlistment is not null)
        {
            throw new InvalidOperationException(
                "A distributed transaction is already open on this connection; commit or roll it back before starting another.");
        }

        if (CurrentTransaction is { } transaction)
        {
            throw new InvalidOperationException(
                $"A transaction is already open on shard '{transaction.Shard}'; commit or roll it back before starting another.");
        }
    }
}

using System.Data;

namespace ShardKit;

/// <summary>
/// Commands pinned to one shard, chosen by <see cref="ShardedConnection.ForKey"/> or
/// <see cref="ShardedConnection.OnShard"/>: the parameters are passed as they are and not searched for a key.
/// </summary>
public sealed class ShardScope : ShardCommandTarget
{
    private readonly ShardedConnection _connection;
    private readonly int _shard;

    internal ShardScope(ShardedConnection connection, int shard)
    {
        _connection = connection;
        _shard = shard;
    }

    /// <summary>The name of the shard this scope targets.</summary>
    public string Shard => _connection.DataSource.Map.ShardNames[_shard];

    private protected override ShardedConnection Owner => _connection;

    /// <summary>Starts a transaction on this shard; until it ends, every command of the connection must target this shard.</summary>
    public Task<ShardTransaction> BeginTransactionAsync(IsolationLevel isolationLevel = IsolationLevel.ReadCommitted,
        CancellationToken cancellationToken = default) =>
        _connection.BeginTransactionAsync(_shard, isolationLevel, cancellationToken);

    /// <summary>Starts a transaction on this shard; until it ends, every command of the connection must target this shard.</summary>
    public ShardTransaction BeginTransaction(IsolationLevel isolationLevel = IsolationLevel.ReadCommitted) =>
        _connection.BeginTransaction(_shard, isolationLevel);

    private protected override Route Resolve(object? parameters, Type? resultType) => Route.To(_shard);
}

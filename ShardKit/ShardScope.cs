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
    private readonly ReadPolicy? _readPolicy;

    internal ShardScope(ShardedConnection connection, int shard, ReadPolicy? readPolicy = null)
    {
        _connection = connection;
        _shard = shard;
        _readPolicy = readPolicy;
    }

    /// <summary>The name of the shard this scope targets.</summary>
    public string Shard => _connection.DataSource.Map.ShardNames[_shard];

    private protected override ShardedConnection Owner => _connection;

    private protected override ReadPolicy? ReadPolicyOverride => _readPolicy;

    /// <summary>
    /// The same shard, with reads sent by <paramref name="policy"/> instead of the connection's <see cref="ShardedConnection.ReadPolicy"/>:
    /// <c>db.ForKey(key).WithReadPolicy(ReadPolicy.PreferStandby).QueryAsync&lt;Order&gt;(…)</c>. Writes still go to the primary.
    /// </summary>
    public ShardScope WithReadPolicy(ReadPolicy policy) => Enum.IsDefined(policy)
        ? new(_connection, _shard, policy)
        : throw new ArgumentOutOfRangeException(nameof(policy), policy, "Use Primary, PreferStandby or Standby.");

    /// <summary>Starts a transaction on this shard; until it ends, every command of the connection must target this shard.</summary>
    public Task<ShardTransaction> BeginTransactionAsync(IsolationLevel isolationLevel = IsolationLevel.ReadCommitted,
        CancellationToken cancellationToken = default) =>
        _connection.BeginTransactionAsync(_shard, isolationLevel, cancellationToken);

    /// <summary>Starts a transaction on this shard; until it ends, every command of the connection must target this shard.</summary>
    public ShardTransaction BeginTransaction(IsolationLevel isolationLevel = IsolationLevel.ReadCommitted) =>
        _connection.BeginTransaction(_shard, isolationLevel);

    private protected override Route Resolve(object? parameters, Type? resultType) => Route.To(_shard);
}

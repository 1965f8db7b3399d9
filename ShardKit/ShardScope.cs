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
    private readonly ShardKeyValue? _key;
    private readonly long? _id;

    internal ShardScope(ShardedConnection connection, int shard, ReadPolicy? readPolicy = null)
    {
        _connection = connection;
        _shard = shard;
        _readPolicy = readPolicy;
    }

    // ForKey: the shard is the key's by the map each command starts with (a stored map may move its bucket).
    internal ShardScope(ShardedConnection connection, ShardKeyValue key, ReadPolicy? readPolicy = null)
        : this(connection, connection.DataSource.Map.Strategy.ShardOf(key), readPolicy) => _key = key;

    // ForId: the shard is the owner of the id's bucket by the map each command starts with.
    internal ShardScope(ShardedConnection connection, long id, ReadPolicy? readPolicy = null)
        : this(connection, IdRouting.ShardOf(connection.DataSource.Map, id), readPolicy) => _id = id;

    // Only a stored map changes under a scope; inside a single-shard transaction the scope stays on the shard it began on
    // (a write there whose bucket moved meanwhile is refused by the fence: ShardBucketMovedException).
    private int ShardIndex => _connection.DataSource.Shards.Follower is null || _connection.Session.Pinned is not null ? _shard
        : _key is { } key ? _connection.DataSource.Map.Strategy.ShardOf(key)
        : _id is { } id ? IdRouting.ShardOf(_connection.DataSource.Map, id)
        : _shard;

    /// <summary>The name of the shard this scope targets.</summary>
    public string Shard => _connection.DataSource.Map.ShardNames[ShardIndex];

    private protected override ShardedConnection Owner => _connection;

    private protected override ReadPolicy? ReadPolicyOverride => _readPolicy;

    /// <summary>
    /// The same shard, with reads sent by <paramref name="policy"/> instead of the connection's <see cref="ShardedConnection.ReadPolicy"/>:
    /// <c>db.ForKey(key).WithReadPolicy(ReadPolicy.PreferStandby).QueryAsync&lt;Order&gt;(…)</c>. Writes still go to the primary.
    /// </summary>
    public ShardScope WithReadPolicy(ReadPolicy policy) => Enum.IsDefined(policy)
        ? _key is { } key ? new(_connection, key, policy) : _id is { } id ? new(_connection, id, policy) : new(_connection, _shard, policy)
        : throw new ArgumentOutOfRangeException(nameof(policy), policy, "Use Primary, PreferStandby or Standby.");

    /// <summary>Starts a transaction on this shard; until it ends, every command of the connection must target this shard.</summary>
    public Task<ShardTransaction> BeginTransactionAsync(IsolationLevel isolationLevel = IsolationLevel.ReadCommitted,
        CancellationToken cancellationToken = default) =>
        _connection.BeginTransactionAsync(ShardIndex, isolationLevel, cancellationToken);

    /// <summary>Starts a transaction on this shard; until it ends, every command of the connection must target this shard.</summary>
    public ShardTransaction BeginTransaction(IsolationLevel isolationLevel = IsolationLevel.ReadCommitted) =>
        _connection.BeginTransaction(ShardIndex, isolationLevel);

    // A ForKey scope's route carries its key and a ForId scope's its id's bucket, so their writes name the bucket to the
    // shard's fence; OnShard's name none (the caller chose the shard).
    private protected override Route Resolve(object? parameters, Type? resultType) =>
        _key is { } key ? Route.To(ShardIndex, key)
        : _id is { } id && _connection.DataSource.Map.Buckets is not null ? Route.ToBucket(ShardIndex, ShardId.BucketOf(id))
        : Route.To(ShardIndex);
}

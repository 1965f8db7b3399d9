using System.Data;
using Npgsql;

namespace ShardKit;

/// <summary>
/// Takes the place of an <see cref="NpgsqlConnection"/>: the same Dapper-shaped methods, each routed to the shard that
/// owns the key in its parameters. Per-shard connections are opened lazily from the shards' pools and reused until
/// disposal. Like any ADO.NET connection it is meant for one logical operation at a time.
/// </summary>
/// <example>
/// <code>
/// await db.ExecuteAsync("insert into orders (customer_id, id, total) values (@CustomerId, @Id, @Total)", order);   // order's [ShardKey]
/// var some = await db.QueryAsync&lt;Order&gt;("select * from orders where customer_id = any(@CustomerId)",
///     new { CustomerId = new[] { 1L, 2L, 3L } });                                                          // split per shard
/// var total = await db.AllShards().ExecuteScalarAsync("select sum(total) from orders", Merge.Sum&lt;decimal&gt;());
/// </code>
/// </example>
public sealed partial class ShardedConnection : ShardCommandTarget, IAsyncDisposable, IDisposable
{
    private readonly NpgsqlConnection?[] _connections;
    private ShardTransaction? _transaction;
    private bool _disposed;
    private int _busy;

    internal ShardedConnection(ShardedDataSource dataSource)
    {
        DataSource = dataSource;
        _connections = new NpgsqlConnection?[dataSource.ShardCount];
    }

    /// <summary>The data source this connection routes with.</summary>
    public ShardedDataSource DataSource { get; }

    /// <summary>The open single-shard transaction, if any.</summary>
    public ShardTransaction? CurrentTransaction => _transaction;

    private protected override ShardedConnection Owner => this;

    /// <summary>Targets the shard that owns <paramref name="key"/>, whatever the parameters say.</summary>
    public ShardScope ForKey(ShardKeyValue key) => new(this, DataSource.Map.Strategy.ShardOf(key));

    /// <summary>Targets the shard named <paramref name="shardName"/>.</summary>
    public ShardScope OnShard(string shardName) => new(this, DataSource.Map.IndexOf(shardName));

    // Inside a single-shard transaction the key is resolved exactly as outside (a key of another shard is then
    // refused by CheckAgainstTransaction); only a command that names no key at all defaults to the pinned shard.
    private protected override Route Resolve(object? parameters, Type? resultType)
    {
        if (_transaction is null)
        {
            return RouteResolver.Resolve(DataSource.Map, DataSource.KeyNames, parameters, resultType);
        }

        return RouteResolver.TryResolve(DataSource.Map, DataSource.KeyNames, parameters, resultType, out var route)
            ? route
            : Route.To(_transaction.ShardIndex);
    }

    /// <summary>
    /// Marks the start of one logical operation (a call, or a stream until it ends) and refuses a second one while it
    /// runs: two operations at once would share the per-shard connections. The shards of one operation may still open
    /// in parallel. Dispose the returned scope when the operation ends.
    /// </summary>
    internal OperationScope EnterOperation()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            throw new ShardedConnectionBusyException();
        }

        return new OperationScope(this);
    }

    internal async ValueTask<NpgsqlConnection> OpenShardAsync(int shard, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var connection = Volatile.Read(ref _connections[shard]);
        if (connection is not { State: ConnectionState.Open })
        {
            ThrowIfTransactionLost(shard);
            var opened = await DataSource.DataSourceAt(shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            if (!TryStore(shard, connection, opened))
            {
                await opened.DisposeAsync().ConfigureAwait(false);
                throw StoreRefused();
            }

            if (connection is not null)
            {
                await connection.DisposeAsync().ConfigureAwait(false);
            }

            connection = opened;
        }

        if (_distributed is { IsActive: true } distributed)
        {
            await distributed.EnlistAsync(shard, connection, cancellationToken).ConfigureAwait(false);
        }

        return connection;
    }

    internal NpgsqlConnection OpenShard(int shard)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var connection = Volatile.Read(ref _connections[shard]);
        if (connection is not { State: ConnectionState.Open })
        {
            ThrowIfTransactionLost(shard);
            var opened = DataSource.DataSourceAt(shard).OpenConnection();
            if (!TryStore(shard, connection, opened))
            {
                opened.Dispose();
                throw StoreRefused();
            }

            connection?.Dispose();
            connection = opened;
        }

        _distributed?.EnlistIfActive(shard, connection);
        return connection;
    }

    // Every connection opened ends up in its slot or disposed: the slot changes only from what this call saw, and a
    // connection stored while DisposeAsync ran is taken back here (whichever side takes it from the slot disposes it).
    private bool TryStore(int shard, NpgsqlConnection? seen, NpgsqlConnection opened)
    {
        if (Interlocked.CompareExchange(ref _connections[shard], opened, seen) != seen)
        {
            return false;
        }

        return !Volatile.Read(ref _disposed) || Interlocked.CompareExchange(ref _connections[shard], null, opened) != opened;
    }

    private Exception StoreRefused() =>
        Volatile.Read(ref _disposed) ? new ObjectDisposedException(GetType().FullName) : new ShardedConnectionBusyException();

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        Volatile.Write(ref _disposed, true);
        if (_transaction is not null)
        {
            await _transaction.DisposeAsync().ConfigureAwait(false);
        }

        if (_distributed is not null)
        {
            await _distributed.DisposeAsync().ConfigureAwait(false);
        }

        for (var shard = 0; shard < _connections.Length; shard++)
        {
            if (Interlocked.Exchange(ref _connections[shard], null) is { } connection)
            {
                await connection.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        Volatile.Write(ref _disposed, true);
        _transaction?.Dispose();
        _distributed?.Dispose();
        for (var shard = 0; shard < _connections.Length; shard++)
        {
            Interlocked.Exchange(ref _connections[shard], null)?.Dispose();
        }
    }

    private void ThrowIfTransactionLost(int shard)
    {
        if (_distributed is { IsActive: true } distributed && distributed.Touches(shard) && _connections[shard] is not null)
        {
            throw new ShardKitException(
                $"The connection to shard '{DataSource.Map.ShardNames[shard]}' was lost inside the distributed transaction; its work " +
                "there is gone. Roll the transaction back (or dispose it) and start again.");
        }

        if (_transaction is not null && _transaction.ShardIndex == shard && _connections[shard] is not null)
        {
            throw new ShardRoutingException(
                $"The connection to shard '{_transaction.Shard}' was lost inside its transaction; the transaction is gone. " +
                "Dispose it and start again.");
        }
    }

    /// <summary>Ends the operation begun by <see cref="EnterOperation"/>; the default value does nothing.</summary>
    internal readonly struct OperationScope(ShardedConnection? connection) : IDisposable
    {
        public void Dispose()
        {
            if (connection is not null)
            {
                Volatile.Write(ref connection._busy, 0);
            }
        }
    }
}

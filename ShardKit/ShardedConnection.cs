using System.Data;
using Npgsql;

namespace ShardKit;

/// <summary>
/// Takes the place of an <see cref="NpgsqlConnection"/>: the same Dapper-shaped methods, each routed to the shard that
/// owns the key in its parameters. Per-shard connections are opened lazily from the shards' pools and reused until
/// disposal. Like any ADO.NET connection it is meant for one logical operation at a time.
/// </summary>
public sealed partial class ShardedConnection : ShardCommandTarget, IAsyncDisposable, IDisposable
{
    private readonly NpgsqlConnection?[] _connections;
    private ShardTransaction? _transaction;
    private bool _disposed;

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

    internal async ValueTask<NpgsqlConnection> OpenShardAsync(int shard, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var connection = _connections[shard];
        if (connection is not { State: ConnectionState.Open })
        {
            ThrowIfTransactionLost(shard);
            if (connection is not null)
            {
                await connection.DisposeAsync().ConfigureAwait(false);
            }

            connection = await DataSource.DataSourceAt(shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            _connections[shard] = connection;
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
        var connection = _connections[shard];
        if (connection is not { State: ConnectionState.Open })
        {
            ThrowIfTransactionLost(shard);
            connection?.Dispose();
            connection = DataSource.DataSourceAt(shard).OpenConnection();
            _connections[shard] = connection;
        }

        _distributed?.EnlistIfActive(shard, connection);
        return connection;
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_transaction is not null)
        {
            await _transaction.DisposeAsync().ConfigureAwait(false);
        }

        if (_distributed is not null)
        {
            await _distributed.DisposeAsync().ConfigureAwait(false);
        }

        foreach (var connection in _connections)
        {
            if (connection is not null)
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

        _disposed = true;
        _transaction?.Dispose();
        _distributed?.Dispose();
        foreach (var connection in _connections)
        {
            connection?.Dispose();
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
}

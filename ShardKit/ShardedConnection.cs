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
    internal ShardedConnection(ShardedDataSource dataSource)
    {
        DataSource = dataSource;
        Session = new ShardSession(dataSource.Shards);
    }

    /// <summary>The data source this connection routes with.</summary>
    public ShardedDataSource DataSource { get; }

    /// <summary>The open single-shard transaction, if any.</summary>
    public ShardTransaction? CurrentTransaction => Session.Pinned?.Owner as ShardTransaction;

    /// <summary>The per-shard connections, the operation guard and the transaction pins the layers below work with.</summary>
    internal ShardSession Session { get; }

    private protected override ShardedConnection Owner => this;

    /// <summary>Targets the shard that owns <paramref name="key"/>, whatever the parameters say.</summary>
    public ShardScope ForKey(ShardKeyValue key) => new(this, key);

    /// <summary>Targets the shard named <paramref name="shardName"/>.</summary>
    public ShardScope OnShard(string shardName) => new(this, DataSource.Map.IndexOf(shardName));

    // Inside a single-shard transaction the key is resolved exactly as outside (a key of another shard is then
    // refused by CheckAgainstTransaction); only a command that names no key at all defaults to the pinned shard.
    private protected override Route Resolve(object? parameters, Type? resultType)
    {
        if (Session.Pinned is not { } pinned)
        {
            return RouteResolver.Resolve(DataSource.Map, DataSource.KeyNames, parameters, resultType);
        }

        return RouteResolver.TryResolve(DataSource.Map, DataSource.KeyNames, parameters, resultType, out var route)
            ? route
            : Route.To(pinned.Shard);
    }

    /// <inheritdoc cref="ShardSession.EnterOperation"/>
    internal ShardSession.OperationScope EnterOperation() => Session.EnterOperation();

    /// <inheritdoc />
    public ValueTask DisposeAsync() => Session.DisposeAsync();

    /// <inheritdoc />
    public void Dispose() => Session.Dispose();
}

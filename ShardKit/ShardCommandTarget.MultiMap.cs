using System.Data;
using Dapper;

namespace ShardKit;

// Dapper's multi-mapping (one row split into several objects at the splitOn columns), routed like Query<T>. The
// shard key is looked up by the result type first, then by the mapped types, so Query<Order, Customer, Order> routes
// by Order's [ShardKey]. A key list split over several shards runs them in parallel: map must not share state then.
public abstract partial class ShardCommandTarget
{
    /// <summary>
    /// Runs a query on the shard that owns its key and maps each row to two objects split at <paramref name="splitOn"/>,
    /// combined by <paramref name="map"/> (Dapper's multi-mapping). The parameters are searched for the key name of
    /// <typeparamref name="TReturn"/>'s <c>[ShardKey]</c>, else of the first mapped type that has one. The rows are read
    /// whole (<paramref name="buffered"/> is accepted for Dapper's signature).
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<IEnumerable<TReturn>> QueryAsync<TFirst, TSecond, TReturn>(string sql, Func<TFirst, TSecond, TReturn> map,
        object? param = null, IDbTransaction? transaction = null, bool buffered = true, string splitOn = "Id",
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryAsync(Definition(sql, param, transaction, buffered, commandTimeout, commandType), map, splitOn);

    /// <summary>Runs a query on the key's shard and maps each row to two objects combined by <paramref name="map"/>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<IEnumerable<TReturn>> QueryAsync<TFirst, TSecond, TReturn>(CommandDefinition command, Func<TFirst, TSecond, TReturn> map,
        string splitOn = "Id")
    {
        ArgumentNullException.ThrowIfNull(map);
        return QueryMappedAsync(command, Keyed(typeof(TReturn), typeof(TFirst), typeof(TSecond)),
            (c, cmd) => c.QueryAsync(cmd, map, splitOn));
    }

    /// <summary>
    /// Runs a query on the shard that owns its key and maps each row to three objects split at <paramref name="splitOn"/>
    /// (comma-separated column names), combined by <paramref name="map"/>.
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<IEnumerable<TReturn>> QueryAsync<TFirst, TSecond, TThird, TReturn>(string sql, Func<TFirst, TSecond, TThird, TReturn> map,
        object? param = null, IDbTransaction? transaction = null, bool buffered = true, string splitOn = "Id",
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryAsync(Definition(sql, param, transaction, buffered, commandTimeout, commandType), map, splitOn);

    /// <summary>Runs a query on the key's shard and maps each row to three objects combined by <paramref name="map"/>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<IEnumerable<TReturn>> QueryAsync<TFirst, TSecond, TThird, TReturn>(CommandDefinition command,
        Func<TFirst, TSecond, TThird, TReturn> map, string splitOn = "Id")
    {
        ArgumentNullException.ThrowIfNull(map);
        return QueryMappedAsync(command, Keyed(typeof(TReturn), typeof(TFirst), typeof(TSecond), typeof(TThird)),
            (c, cmd) => c.QueryAsync(cmd, map, splitOn));
    }

    /// <summary>Runs a query on the key's shard and maps each row to two objects combined by <paramref name="map"/>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public IEnumerable<TReturn> Query<TFirst, TSecond, TReturn>(string sql, Func<TFirst, TSecond, TReturn> map, object? param = null,
        IDbTransaction? transaction = null, bool buffered = true, string splitOn = "Id", int? commandTimeout = null,
        CommandType? commandType = null)
    {
        ArgumentNullException.ThrowIfNull(map);
        return QueryMapped(Definition(sql, param, transaction, buffered, commandTimeout, commandType),
            Keyed(typeof(TReturn), typeof(TFirst), typeof(TSecond)),
            (c, cmd) => c.Query(cmd.CommandText, map, cmd.Parameters, cmd.Transaction, buffered: true, splitOn, cmd.CommandTimeout, cmd.CommandType));
    }

    /// <summary>Runs a query on the key's shard and maps each row to three objects combined by <paramref name="map"/>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public IEnumerable<TReturn> Query<TFirst, TSecond, TThird, TReturn>(string sql, Func<TFirst, TSecond, TThird, TReturn> map,
        object? param = null, IDbTransaction? transaction = null, bool buffered = true, string splitOn = "Id",
        int? commandTimeout = null, CommandType? commandType = null)
    {
        ArgumentNullException.ThrowIfNull(map);
        return QueryMapped(Definition(sql, param, transaction, buffered, commandTimeout, commandType),
            Keyed(typeof(TReturn), typeof(TFirst), typeof(TSecond), typeof(TThird)),
            (c, cmd) => c.Query(cmd.CommandText, map, cmd.Parameters, cmd.Transaction, buffered: true, splitOn, cmd.CommandTimeout, cmd.CommandType));
    }

    // The rows are always read whole: the shard's connection is released for the next command when the call returns.
    private async Task<IEnumerable<TReturn>> QueryMappedAsync<TReturn>(CommandDefinition command, Type? keyed,
        Func<Npgsql.NpgsqlConnection, CommandDefinition, Task<IEnumerable<TReturn>>> query)
    {
        var writes = WriteFence.ChangesData(command.CommandText);
        using var operation = Owner.EnterOperation();
        return await FollowingMovesAsync(command, keyed, async route => route.IsSingle
            ? await RunRoutedAsync(route.Shard, "Query", command.CommandText, writes, (Command: QueryBound(command, route, writes), Query: query),
                static async (c, s) => (IEnumerable<TReturn>)(await s.Query(c, s.Command).ConfigureAwait(false)).AsList(),
                command.CancellationToken).ConfigureAwait(false)
            : (await RunPartsAsync(route, command, "Query", isWrite: false, query).ConfigureAwait(false)).SelectMany(rows => rows).ToList())
            .ConfigureAwait(false);
    }

    private List<TReturn> QueryMapped<TReturn>(CommandDefinition command, Type? keyed,
        Func<Npgsql.NpgsqlConnection, CommandDefinition, IEnumerable<TReturn>> query)
    {
        var writes = WriteFence.ChangesData(command.CommandText);
        using var operation = Owner.EnterOperation();
        return FollowingMoves(command, keyed, (route, _) => route.IsSingle
            ? RunRouted(route.Shard, "Query", command.CommandText, writes, (Command: QueryBound(command, route, writes), Query: query),
                static (c, s) => s.Query(c, s.Command).AsList())
            : RunParts(route, command, "Query", false, (c, cmd) => query(c, cmd).AsList()).SelectMany(rows => rows).ToList());
    }

    // Dapper's multi-mapping reads CommandFlags.Buffered to decide whether to stream; ShardKit always buffers (see above).
    private static CommandDefinition Definition(string sql, object? param, IDbTransaction? transaction, bool buffered,
        int? commandTimeout, CommandType? commandType) =>
        new(sql, param, transaction, commandTimeout, commandType, buffered ? CommandFlags.Buffered : CommandFlags.None);

    /// <summary>The first of <paramref name="types"/> that declares a <c>[ShardKey]</c>; the parameters are searched for its name.</summary>
    private static Type? Keyed(params Type[] types) => Array.Find(types, t => ShardKeyMember.For(t) is not null);
}

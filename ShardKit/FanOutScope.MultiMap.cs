using System.Data;
using System.Runtime.CompilerServices;
using Dapper;
using Npgsql;

namespace ShardKit;

// Dapper's multi-mapping across shards. The merge plan works on the mapped rows (TReturn), so an ordered merge takes
// its key from the mapped object: Merge.OrderByDescending<OrderLine, DateTime>(l => l.Order.CreatedAt). Each shard's
// rows are mapped as Dapper maps them (read whole, as Dapper's multi-mapping does), and the shards map in parallel:
// map must not share state between calls.
public sealed partial class FanOutScope
{
    /// <summary>
    /// Runs a query on every targeted shard in parallel, splits each row at <paramref name="splitOn"/> into two objects
    /// combined by <paramref name="map"/>, and merges the mapped rows as <paramref name="merge"/> says (its keys read the
    /// mapped row). <paramref name="map"/> runs for several shards at once: keep it free of shared state.
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public Task<FanOutResult<TReturn>> QueryAsync<TFirst, TSecond, TReturn>(string sql, Func<TFirst, TSecond, TReturn> map,
        object? param = null, MergePlan<TReturn>? merge = null, string splitOn = "Id", int? commandTimeout = null,
        CommandType? commandType = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(map);
        return QueryMappedAsync(Command(sql, param, commandTimeout, commandType, cancellationToken), merge,
            (connection, command) => connection.QueryAsync(command, map, splitOn));
    }

    /// <summary>
    /// Runs a query on every targeted shard in parallel, splits each row at <paramref name="splitOn"/> (comma-separated)
    /// into three objects combined by <paramref name="map"/>, and merges the mapped rows as <paramref name="merge"/> says.
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public Task<FanOutResult<TReturn>> QueryAsync<TFirst, TSecond, TThird, TReturn>(string sql, Func<TFirst, TSecond, TThird, TReturn> map,
        object? param = null, MergePlan<TReturn>? merge = null, string splitOn = "Id", int? commandTimeout = null,
        CommandType? commandType = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(map);
        return QueryMappedAsync(Command(sql, param, commandTimeout, commandType, cancellationToken), merge,
            (connection, command) => connection.QueryAsync(command, map, splitOn));
    }

    /// <summary>The blocking form of the two-type multi-mapping fan-out read; the shards still run in parallel.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public FanOutResult<TReturn> Query<TFirst, TSecond, TReturn>(string sql, Func<TFirst, TSecond, TReturn> map, object? param = null,
        MergePlan<TReturn>? merge = null, string splitOn = "Id", int? commandTimeout = null, CommandType? commandType = null) =>
        Wait(QueryAsync(sql, map, param, merge, splitOn, commandTimeout, commandType));

    /// <summary>The blocking form of the three-type multi-mapping fan-out read; the shards still run in parallel.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public FanOutResult<TReturn> Query<TFirst, TSecond, TThird, TReturn>(string sql, Func<TFirst, TSecond, TThird, TReturn> map,
        object? param = null, MergePlan<TReturn>? merge = null, string splitOn = "Id", int? commandTimeout = null,
        CommandType? commandType = null) =>
        Wait(QueryAsync(sql, map, param, merge, splitOn, commandTimeout, commandType));

    private async Task<FanOutResult<TReturn>> QueryMappedAsync<TReturn>(CommandDefinition command, MergePlan<TReturn>? merge,
        Func<NpgsqlConnection, CommandDefinition, Task<IEnumerable<TReturn>>> query)
    {
        var plan = merge ?? Unplanned(command, "Query", Merge.Concat<TReturn>());
        var (rows, failures) = await CollectAsync(command, plan, "Query", static r => r.Row,
            (connection, cmd, token) => MappedRowsAsync(query, connection, ShardRowReader.WithToken(cmd, token), token)).ConfigureAwait(false);
        return new FanOutResult<TReturn>(rows, failures);
    }

    private static async IAsyncEnumerable<TReturn> MappedRowsAsync<TReturn>(Func<NpgsqlConnection, CommandDefinition, Task<IEnumerable<TReturn>>> query,
        NpgsqlConnection connection, CommandDefinition command, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        foreach (var row in await query(connection, command).ConfigureAwait(false))
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return row;
        }
    }
}

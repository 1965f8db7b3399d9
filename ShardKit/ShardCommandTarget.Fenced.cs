using Dapper;
using Npgsql;

namespace ShardKit;

/// <summary>
/// Writes sent through <c>Query*</c>, <c>ExecuteScalar</c>, <c>QueryMultiple</c> or a multi-mapped query
/// (<c>insert … returning id</c>, <c>update … returning *</c>): they run as the writes they are (on the primary, never
/// retried as a read would be) and, on a data source that follows a stored map, name their buckets to the shard's fence
/// as <c>Execute</c> does. The fence statement returns no rows, so Dapper reads the write's rows as it always does.
/// </summary>
public abstract partial class ShardCommandTarget
{
    /// <summary>
    /// The command as it runs on the route's shard: fenced when it changes data (see <see cref="FencedWrite"/>), its
    /// buckets named to the fence when it reads moving ones (see <see cref="RoutedRead"/>).
    /// </summary>
    private CommandDefinition QueryBound(in CommandDefinition command, in Route route, bool writes) =>
        writes ? FencedWrite(command, route) : RoutedRead(command, route);

    private static string QueryOneName(bool orDefault, bool single) => (orDefault, single) switch
    {
        (false, false) => "QueryFirst",
        (true, false) => "QueryFirstOrDefault",
        (false, true) => "QuerySingle",
        (true, true) => "QuerySingleOrDefault",
    };

    private static Task<T> QueryRowAsync<T>(NpgsqlConnection connection, CommandDefinition command, bool orDefault, bool single) =>
        (orDefault, single) switch
        {
            (false, false) => connection.QueryFirstAsync<T>(command),
            (true, false) => connection.QueryFirstOrDefaultAsync<T>(command)!,
            (false, true) => connection.QuerySingleAsync<T>(command),
            (true, true) => connection.QuerySingleOrDefaultAsync<T>(command)!,
        };

    private static T QueryRow<T>(NpgsqlConnection connection, CommandDefinition command, bool orDefault, bool single) =>
        (orDefault, single) switch
        {
            (false, false) => connection.QueryFirst<T>(command),
            (true, false) => connection.QueryFirstOrDefault<T>(command)!,
            (false, true) => connection.QuerySingle<T>(command),
            (true, true) => connection.QuerySingleOrDefault<T>(command)!,
        };

    /// <summary>
    /// Runs <paramref name="run"/> by the route of <paramref name="command"/>, and again by a newer map when a shard
    /// refused it because its bucket moved (see <see cref="MayFollowMove"/>).
    /// </summary>
    private async Task<TResult> FollowingMovesAsync<TResult>(CommandDefinition command, Type? resultType, Func<Route, Task<TResult>> run)
    {
        var epoch = Owner.DataSource.Map.Epoch; // before the route: a refusal waits for a map newer than the one it was routed by
        var route = ResolveChecked(command, resultType);
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return await run(route).ConfigureAwait(false);
            }
            catch (Exception e) when (MayFollowMove(e, attempt, route, command, read: true))
            {
                if (RouteByRefusal(e, attempt, route, epoch, command) is { } hinted)
                {
                    route = hinted;
                    continue;
                }

                if (!await WaitForNewerMapAsync(epoch, command.CancellationToken).ConfigureAwait(false))
                {
                    throw;
                }
            }

            epoch = Owner.DataSource.Map.Epoch;
            route = ResolveChecked(command, resultType);
        }
    }

    /// <summary>
    /// Runs a routed command, and again by a newer map when a shard refused it because its bucket moved (see
    /// <see cref="MayFollowMove"/>): the synchronous twin of the loops of the asynchronous commands.
    /// </summary>
    private TResult FollowingMoves<TResult>(CommandDefinition command, Type? resultType, Func<Route, long, TResult> run)
    {
        var epoch = Owner.DataSource.Map.Epoch; // before the route: a refusal waits for a map newer than the one it was routed by
        var route = ResolveChecked(command, resultType);
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return run(route, epoch);
            }
            catch (Exception e) when (MayFollowMove(e, attempt, route, command, read: true))
            {
                if (RouteByRefusal(e, attempt, route, epoch, command) is { } hinted)
                {
                    route = hinted;
                    continue;
                }

                if (!WaitForNewerMapAsync(epoch, command.CancellationToken).GetAwaiter().GetResult())
                {
                    throw;
                }
            }

            epoch = Owner.DataSource.Map.Epoch;
            route = ResolveChecked(command, resultType);
        }
    }
}

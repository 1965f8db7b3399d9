using System.Data;
using Dapper;

namespace ShardKit;

// QueryMultiple on one shard. The grid reader keeps the connection's operation open (and the shard connection's reader
// with it) until it is disposed, so nothing else can run on the connection meanwhile.
public abstract partial class ShardCommandTarget
{
    /// <summary>
    /// Runs several statements on the shard that owns the key and returns their result sets, read in order. Dispose
    /// the reader when done: until then the connection refuses other calls (<see cref="ShardedConnectionBusyException"/>).
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<ShardGridReader> QueryMultipleAsync(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryMultipleAsync(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs several statements on the key's shard and returns their result sets; dispose the reader when done.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public async Task<ShardGridReader> QueryMultipleAsync(CommandDefinition command)
    {
        var writes = WriteFence.ChangesData(command.CommandText);
        var operation = Owner.EnterOperation();
        try
        {
            return await FollowingMovesAsync(command, null, async route =>
            {
                var shard = SingleShardForGrid(route);
                var grid = await RunRoutedAsync(shard, "QueryMultiple", command.CommandText, writes, QueryBound(command, route, writes),
                    static (c, cmd) => c.QueryMultipleAsync(cmd), command.CancellationToken).ConfigureAwait(false);
                return new ShardGridReader(grid, operation, Owner.DataSource.Map.ShardNames[shard]);
            }).ConfigureAwait(false);
        }
        catch
        {
            operation.Dispose();
            throw;
        }
    }

    /// <summary>Runs several statements on the key's shard and returns their result sets; dispose the reader when done.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public ShardGridReader QueryMultiple(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryMultiple(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs several statements on the key's shard and returns their result sets; dispose the reader when done.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public ShardGridReader QueryMultiple(CommandDefinition command)
    {
        var writes = WriteFence.ChangesData(command.CommandText);
        var operation = Owner.EnterOperation();
        try
        {
            return FollowingMoves(command, null, (route, _) =>
            {
                var shard = SingleShardForGrid(route);
                var grid = RunRouted(shard, "QueryMultiple", command.CommandText, writes, QueryBound(command, route, writes),
                    static (c, cmd) => c.QueryMultiple(cmd));
                return new ShardGridReader(grid, operation, Owner.DataSource.Map.ShardNames[shard]);
            });
        }
        catch
        {
            operation.Dispose();
            throw;
        }
    }

    private static int SingleShardForGrid(in Route route) => route.IsSingle ? route.Shard : throw new ShardRoutingException(
        "The keys of this QueryMultiple live on several shards, and its result sets come from one shard. Query per key " +
        "(ForKey(key)), or read each shard's part with QueryAsync and a key list, which is split per shard.");
}

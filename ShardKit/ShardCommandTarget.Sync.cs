using System.Data;
using Dapper;
using Npgsql;

namespace ShardKit;

public abstract partial class ShardCommandTarget
{
    /// <summary>Runs a query on the shard that owns its key and maps the rows to <typeparamref name="T"/>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public IEnumerable<T> Query<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        Query<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs a query on the shard that owns its key; a list of keys is split and the shards run in parallel.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public IEnumerable<T> Query<T>(CommandDefinition command)
    {
        var writes = WriteFence.ChangesData(command.CommandText);
        using var operation = Owner.EnterOperation();
        return FollowingMoves(command, typeof(T), (route, epoch) => route.IsSingle
            ? RunRouted(route.Shard, "Query", command.CommandText, writes, QueryBound(command, route, writes), static (c, cmd) => c.Query<T>(cmd))
            : QuerySplit<T>(route, epoch, command, writes));
    }

    // epoch: the map's, read before the route was resolved (a refusal waits for a map newer than the one it was routed by).
    private List<T> QuerySplit<T>(Route route, long epoch, CommandDefinition command, bool writes)
    {
        try
        {
            return RunParts(route, command, "Query", writes, static (c, cmd) => c.Query<T>(cmd).AsList(), writes ? static rows => rows.Count : null)
                .SelectMany(r => r).ToList();
        }
        catch (BroadcastWriteException e) when (e.PartResults is not null && MayRerunRefusedParts(e, 0, route, command))
        {
            if (!WaitForNewerMapAsync(epoch, command.CancellationToken).GetAwaiter().GetResult())
            {
                throw;
            }

            // Rare (a move switched under the write): the refused parts run on the asynchronous path, waited for here.
            return RerunRefusedQueryPartsAsync<T>(e, route, command, 0).GetAwaiter().GetResult();
        }
    }

    /// <summary>The first row of the query on the key's shard; throws when there is none.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T QueryFirst<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryFirst<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>The first row of the query on the key's shard; throws when there is none.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T QueryFirst<T>(CommandDefinition command) => QueryOne<T>(command, orDefault: false, single: false);

    /// <summary>The first row of the query on the key's shard, or <c>default</c>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T? QueryFirstOrDefault<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryFirstOrDefault<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>The first row of the query on the key's shard, or <c>default</c>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T? QueryFirstOrDefault<T>(CommandDefinition command) => QueryOne<T?>(command, orDefault: true, single: false);

    /// <summary>The only row of the query on the key's shard; throws when there is none or more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T QuerySingle<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QuerySingle<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>The only row of the query on the key's shard; throws when there is none or more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T QuerySingle<T>(CommandDefinition command) => QueryOne<T>(command, orDefault: false, single: true);

    /// <summary>The only row of the query on the key's shard, or <c>default</c>; throws when there is more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T? QuerySingleOrDefault<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QuerySingleOrDefault<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>The only row of the query on the key's shard, or <c>default</c>; throws when there is more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T? QuerySingleOrDefault<T>(CommandDefinition command) => QueryOne<T?>(command, orDefault: true, single: true);

    /// <summary>Runs a statement on the key's shard (or each item's shard, in parallel) and returns the affected rows.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public int Execute(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        Execute(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs a statement on the key's shard (or each item's shard, in parallel) and returns the affected rows.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public int Execute(CommandDefinition command)
    {
        var epoch = Owner.DataSource.Map.Epoch; // before the route: a refusal waits for a map newer than the one it was routed by
        var route = ResolveChecked(command, null);
        using var operation = Owner.EnterOperation();
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return route.IsSingle
                    ? RunRouted(route.Shard, "Execute", command.CommandText, true, FencedWrite(command, route), static (c, cmd) => c.Execute(cmd))
                    : IsItemBatch(route, command) ? RunBatchParts(route, command).Sum()
                    : RunParts(route, command, "Execute", true, static (c, cmd) => c.Execute(cmd), static rows => rows).Sum();
            }
            catch (Exception e) when (MayFollowMove(e, attempt, route, command, read: false))
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
            catch (BroadcastWriteException e) when (MayRerunRefusedParts(e, attempt, route, command))
            {
                if (!WaitForNewerMapAsync(epoch, command.CancellationToken).GetAwaiter().GetResult())
                {
                    throw;
                }

                // Rare (a move switched under the write): the refused parts run on the asynchronous path, waited for here.
                return RerunRefusedPartsAsync(e, route, command, attempt, command.Parameters!).GetAwaiter().GetResult();
            }

            epoch = Owner.DataSource.Map.Epoch;
            route = ResolveChecked(command, null);
        }
    }

    // The synchronous twin of RunBatchPartsAsync: one thread-pool worker per shard, each sending pipelined batches.
    private int[] RunBatchParts(Route route, CommandDefinition command)
    {
        var names = route.Parts!.Select(p => Owner.DataSource.Map.ShardNames[p.Shard]).ToArray();
        var ownTransaction = Owner.CurrentDistributedTransaction is null;
        var batchParts = route.Parts!.Select((p, i) =>
            new RoutePart(p.Shard, (Group: p.Batch!, Shard: names[i], Own: ownTransaction, Fence: FenceOfItems(command, command.Parameters, p.Batch!, p.Shard)))).ToArray();
        return RunParts(Route.Split(batchParts), command, "Execute", true, static (c, cmd) =>
        {
            var (group, shard, own, fence) = ((BatchGroup, string, bool, string?))cmd.Parameters!;
            return PipelinedBatch.Execute(c, (NpgsqlTransaction?)cmd.Transaction, own, cmd.CommandText, group, shard, cmd.CommandTimeout, fence);
        }, static rows => rows);
    }

    /// <summary>Runs a query on the key's shard and returns the first column of the first row.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T? ExecuteScalar<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        ExecuteScalar<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs a query on the key's shard and returns the first column of the first row.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public T? ExecuteScalar<T>(CommandDefinition command)
    {
        var writes = WriteFence.ChangesData(command.CommandText);
        using var operation = Owner.EnterOperation();
        return FollowingMoves(command, null, (route, _) => route.IsSingle
            ? RunRouted(route.Shard, "ExecuteScalar", command.CommandText, writes, QueryBound(command, route, writes), static (c, cmd) => c.ExecuteScalar<T>(cmd))
            : throw ScalarAcrossShards());
    }

    private T QueryOne<T>(CommandDefinition command, bool orDefault, bool single)
    {
        var writes = WriteFence.ChangesData(command.CommandText);
        using var operation = Owner.EnterOperation();
        var name = QueryOneName(orDefault, single);
        return FollowingMoves(command, typeof(T), (route, epoch) => route.IsSingle
            ? RunRouted(route.Shard, name, command.CommandText, writes, (Command: QueryBound(command, route, writes), OrDefault: orDefault, Single: single),
                static (c, s) => QueryRow<T>(c, s.Command, s.OrDefault, s.Single))
            : First(QuerySplit<T>(route, epoch, command, writes), orDefault, single));
    }

    // Synchronous callers still get the shards in parallel: one thread-pool worker per part.
    private TResult[] RunParts<TResult>(Route route, CommandDefinition command, string operation, bool isWrite,
        Func<NpgsqlConnection, CommandDefinition, TResult> run, Func<TResult, int>? affectedRows = null)
    {
        var parts = route.Parts!;
        var results = new TResult[parts.Length];
        var failures = new ShardFailure?[parts.Length];
        Parallel.For(0, parts.Length, i =>
        {
            try
            {
                var bound = isWrite && parts[i].Keys is not null ? FencedPart(command, parts[i]) : isWrite ? Bind(command, parts[i].Shard, parts[i].Parameters)
                    : ReadPart(command, parts[i]);
                results[i] = RunRouted(parts[i].Shard, operation, command.CommandText, isWrite, bound, run);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failures[i] = new ShardFailure(Owner.DataSource.Map.ShardNames[parts[i].Shard], e);
            }
        });
        var failed = failures.OfType<ShardFailure>().ToArray();
        if (failed.Length == 0)
        {
            return results;
        }

        var names = parts.Select(p => Owner.DataSource.Map.ShardNames[p.Shard]).ToArray();
        var error = ShardTasks.Failed(failed, affectedRows is null ? null
            : ShardTasks.Succeeded(results.Select((r, i) => (failures[i] is null, r)).ToArray(), names, affectedRows));
        if (error is BroadcastWriteException write)
        {
            write.PartResults = results.Select((r, i) => failures[i] is null ? (object?)r : null).ToArray();
        }

        throw error;
    }
}

using System.Data;
using System.Data.Common;
using System.Runtime.CompilerServices;
using Dapper;
using Npgsql;

namespace ShardKit;

public abstract partial class ShardCommandTarget
{
    /// <summary>Runs a query on the shard that owns its key and maps the rows to <typeparamref name="T"/>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<IEnumerable<T>> QueryAsync<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryAsync<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs a query on the shard that owns its key; a list of keys is split and the shards run in parallel.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public async Task<IEnumerable<T>> QueryAsync<T>(CommandDefinition command)
    {
        var epoch = Owner.DataSource.Map.Epoch; // before the route: a refusal waits for a map newer than the one it was routed by
        var route = ResolveChecked(command, typeof(T));
        var writes = WriteFence.ChangesData(command.CommandText);
        using var operation = Owner.EnterOperation();
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return route.IsSingle
                    ? await RunRoutedAsync(route.Shard, "Query", command.CommandText, writes, QueryBound(command, route, writes),
                        static (c, cmd) => c.QueryAsync<T>(cmd), command.CancellationToken).ConfigureAwait(false)
                    : await QuerySplitAsync<T>(route, epoch, command, writes).ConfigureAwait(false);
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
            route = ResolveChecked(command, typeof(T));
        }
    }

    /// <summary>The first row of the query on the key's shard; throws when there is none.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<T> QueryFirstAsync<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryFirstAsync<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>The first row of the query on the key's shard; throws when there is none.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<T> QueryFirstAsync<T>(CommandDefinition command) => QueryOneAsync<T>(command, orDefault: false, single: false);

    /// <summary>The first row of the query on the key's shard, or <c>default</c>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<T?> QueryFirstOrDefaultAsync<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryFirstOrDefaultAsync<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>The first row of the query on the key's shard, or <c>default</c>.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<T?> QueryFirstOrDefaultAsync<T>(CommandDefinition command) => QueryOneAsync<T?>(command, orDefault: true, single: false);

    /// <summary>The only row of the query on the key's shard; throws when there is none or more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<T> QuerySingleAsync<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QuerySingleAsync<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>The only row of the query on the key's shard; throws when there is none or more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<T> QuerySingleAsync<T>(CommandDefinition command) => QueryOneAsync<T>(command, orDefault: false, single: true);

    /// <summary>The only row of the query on the key's shard, or <c>default</c>; throws when there is more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<T?> QuerySingleOrDefaultAsync<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QuerySingleOrDefaultAsync<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>The only row of the query on the key's shard, or <c>default</c>; throws when there is more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<T?> QuerySingleOrDefaultAsync<T>(CommandDefinition command) => QueryOneAsync<T?>(command, orDefault: true, single: true);

    /// <summary>
    /// Runs a statement on the key's shard and returns the affected rows. A list of keyed items runs each item on
    /// its own shard (shards in parallel, each shard's items as pipelined batches that apply all or nothing there) and
    /// returns the total; an item a shard refuses is a <see cref="BatchItemException"/> naming its index.
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<int> ExecuteAsync(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        ExecuteAsync(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs a statement on the key's shard (or each item's shard, in parallel) and returns the affected rows.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public async Task<int> ExecuteAsync(CommandDefinition command)
    {
        var epoch = Owner.DataSource.Map.Epoch; // before the route: a refusal waits for a map newer than the one it was routed by
        var route = ResolveChecked(command, null);
        using var operation = Owner.EnterOperation();
        return await ExecuteFollowingMovesAsync(route, epoch, command, 0, null, command.Parameters).ConfigureAwait(false);
    }

    /// <param name="route">Where the command goes first.</param>
    /// <param name="epoch">The map's epoch read before <paramref name="route"/> was resolved.</param>
    /// <param name="command">The command.</param>
    /// <param name="firstAttempt">Attempts already made by a newer map (a rerun part counts those of its command).</param>
    /// <param name="resolve">Routes the command again by a newer map; null: from its parameters.</param>
    /// <param name="original">The caller's parameters (a rerun part's own are a copy that carries only its keys).</param>
    private async Task<int> ExecuteFollowingMovesAsync(Route route, long epoch, CommandDefinition command, int firstAttempt, Func<Route>? resolve,
        object? original)
    {
        for (var attempt = firstAttempt; ; attempt++)
        {
            try
            {
                return await ExecuteRoutedAsync(route, command).ConfigureAwait(false);
            }
            catch (Exception e) when (MayFollowMove(e, attempt, route, command, read: false))
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
            catch (BroadcastWriteException e) when (MayRerunRefusedParts(e, attempt, route, command))
            {
                if (!await WaitForNewerMapAsync(epoch, command.CancellationToken).ConfigureAwait(false))
                {
                    throw;
                }

                return await RerunRefusedPartsAsync(e, route, command, attempt, original!).ConfigureAwait(false);
            }

            epoch = Owner.DataSource.Map.Epoch;
            route = resolve?.Invoke() ?? ResolveChecked(command, null);
        }
    }

    /// <summary>
    /// A key list or item list split over shards where every shard that failed refused its part because the part's
    /// buckets moved: those parts applied nothing (the fence refuses the whole statement, and a shard's share of an
    /// item list runs in one transaction), while the other shards' parts stay applied and must not run twice.
    /// </summary>
    private bool MayRerunRefusedParts(BroadcastWriteException error, int attempt, in Route route, in CommandDefinition command) =>
        attempt < MoveAttempts && !route.IsSingle && error.Failures.Count > 0
        && error.Failures.All(f => ShardBucketMovedException.IsMoved(f.Error))
        && Owner.DataSource.Shards.Follower is not null && !Owner.Session.InTransaction && command.Transaction is null;

    // Runs each refused part again, alone, routed by the newer map (its keys may now split over other shards). A part
    // that fails then reports what every round applied, so the caller still knows where the write stands.
    private async Task<int> RerunRefusedPartsAsync(BroadcastWriteException refusal, Route route, CommandDefinition command, int attempt,
        object original)
    {
        var names = Owner.DataSource.Map.ShardNames;
        var applied = new Dictionary<string, int>(refusal.AffectedRows);
        foreach (var part in route.Parts!.Where(p => refusal.Failures.Any(f => f.Shard == names[p.Shard])))
        {
            var partCommand = new CommandDefinition(command.CommandText, part.Parameters, command.Transaction, command.CommandTimeout,
                command.CommandType, command.Flags, command.CancellationToken);
            Route Again() => part.Batch is { } group
                ? RouteResolver.BatchAgain(Owner.DataSource.Map, original, group)
                : RouteResolver.SplitAgain(Owner.DataSource.Map, Owner.DataSource.KeyNames, original, part.Keys!);
            var epoch = Owner.DataSource.Map.Epoch;
            var again = Again();

            try
            {
                var rows = await ExecuteFollowingMovesAsync(again, epoch, partCommand, attempt + 1, Again, original).ConfigureAwait(false);
                var shard = names[again.IsSingle ? again.Shard : part.Shard]; // a part split again is counted under the shard that refused it
                applied[shard] = applied.GetValueOrDefault(shard) + rows;
            }
            catch (BroadcastWriteException e)
            {
                foreach (var (shard, rows) in e.AffectedRows)
                {
                    applied[shard] = applied.GetValueOrDefault(shard) + rows;
                }

                throw ShardTasks.Failed(e.Failures, applied);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                var shard = e.Data[ShardKitException.ShardDataKey] as string ?? names[part.Shard];
                throw ShardTasks.Failed([new ShardFailure(shard, e)], applied);
            }
        }

        return applied.Values.Sum();
    }

    private async Task<int> ExecuteRoutedAsync(Route route, CommandDefinition command)
    {
        if (route.IsSingle)
        {
            var bound = FencedWrite(command, route);
            return CanCarrySetup(bound)
                ? await Owner.RunOnShardAsync(route.Shard, "Execute", command.CommandText, isWrite: true, (Session: Owner.Session, route.Shard, Command: bound),
                    static (c, s) => ExecuteCarryingSetupAsync(c, s.Session, s.Shard, s.Command), command.CancellationToken, ReadPolicyOverride,
                    carriesSetup: true).ConfigureAwait(false)
                : await RunRoutedAsync(route.Shard, "Execute", command.CommandText, isWrite: true, bound,
                    static (c, cmd) => c.ExecuteAsync(cmd), command.CancellationToken).ConfigureAwait(false);
        }

        var counts = IsItemBatch(route, command)
            ? await RunBatchPartsAsync(route, command).ConfigureAwait(false)
            : await RunPartsAsync(route, command, "Execute", isWrite: true, static (c, cmd) => c.ExecuteAsync(cmd), static rows => rows).ConfigureAwait(false);
        return counts.Sum();
    }

    // A list of keyed items: each shard's items go as pipelined batches, in parallel, each shard's group atomic. In a
    // distributed transaction the first batch on a shard also carries the transaction's lock bound.
    private Task<int[]> RunBatchPartsAsync(Route route, CommandDefinition command)
    {
        var parts = route.Parts!;
        var names = parts.Select(p => Owner.DataSource.Map.ShardNames[p.Shard]).ToArray();
        var ownTransaction = Owner.CurrentDistributedTransaction is null;
        var tasks = new Task<int>[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            var state = (Command: Bind(command, parts[i].Shard, null), Group: parts[i].Batch!, Shard: names[i], Own: ownTransaction,
                Session: Owner.Session, Index: parts[i].Shard, Fence: FenceOfItems(command, command.Parameters, parts[i].Batch!, parts[i].Shard));
            tasks[i] = Owner.RunOnShardAsync(parts[i].Shard, "Execute", command.CommandText, isWrite: true, state,
                static async (c, s) =>
                {
                    var setup = s.Session.Enlistment?.PendingSetup(s.Index);
                    var rows = await PipelinedBatch.ExecuteAsync(c, (NpgsqlTransaction?)s.Command.Transaction, s.Own, s.Command.CommandText,
                        s.Group, s.Shard, s.Command.CommandTimeout, s.Command.CancellationToken, setup, s.Fence).ConfigureAwait(false);
                    if (setup is not null)
                    {
                        s.Session.Enlistment!.SetupSent(s.Index);
                    }

                    return rows;
                },
                command.CancellationToken, ReadPolicyOverride, carriesSetup: !ownTransaction).AsTask();
        }

        return ShardTasks.WhenAllAsync(tasks, names, static rows => rows);
    }

    /// <summary>Runs a query on the key's shard and returns the first column of the first row.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<T?> ExecuteScalarAsync<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        ExecuteScalarAsync<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs a query on the key's shard and returns the first column of the first row.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public async Task<T?> ExecuteScalarAsync<T>(CommandDefinition command)
    {
        var epoch = Owner.DataSource.Map.Epoch; // before the route: a refusal waits for a map newer than the one it was routed by
        var route = ResolveChecked(command, null);
        var writes = WriteFence.ChangesData(command.CommandText);
        using var operation = Owner.EnterOperation();
        for (var attempt = 0; ; attempt++)
        {
            if (!route.IsSingle)
            {
                throw ScalarAcrossShards();
            }

            try
            {
                return await RunRoutedAsync(route.Shard, "ExecuteScalar", command.CommandText, writes,
                    QueryBound(command, route, writes), static (c, cmd) => c.ExecuteScalarAsync<T>(cmd), command.CancellationToken)
                    .ConfigureAwait(false);
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
            route = ResolveChecked(command, null);
        }
    }

    /// <summary>Streams the rows of a query on the key's shard without buffering them; split keys stream shard by shard.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public IAsyncEnumerable<T> QueryUnbufferedAsync<T>(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryUnbufferedAsync<T>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Streams the rows of a query on the key's shard without buffering them; split keys stream shard by shard.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public IAsyncEnumerable<T> QueryUnbufferedAsync<T>(CommandDefinition command)
    {
        // Resolve now, so a routing error surfaces at the call and not at the first MoveNextAsync; the map's epoch goes
        // with the route (a refusal then waits for a map newer than the one that routed, not than the one at the first row).
        var routedBy = Owner.DataSource.Map.Epoch;
        var route = ResolveChecked(command, typeof(T));
        return WriteFence.ChangesData(command.CommandText) ? Written(command, command.CancellationToken)
            : Stream(route, routedBy, command, command.CancellationToken);

        // A write (insert … returning): PostgreSQL holds its rows until the statement ends, so it runs as QueryAsync does
        // (primary, fenced, following a move) and its rows are handed out after.
        async IAsyncEnumerable<T> Written(CommandDefinition command, [EnumeratorCancellation] CancellationToken cancellationToken)
        {
            var written = await QueryAsync<T>(new CommandDefinition(command.CommandText, command.Parameters, command.Transaction,
                command.CommandTimeout, command.CommandType, command.Flags, cancellationToken)).ConfigureAwait(false);
            foreach (var row in written)
            {
                yield return row;
            }
        }

        // A read of moving buckets names them to the fence (see RoutedRead); a refusal comes before the part's first row,
        // so a stream that has handed out no row yet follows the move as the buffered reads do. One that has (an
        // earlier part's rows) cannot take them back: the refusal reaches the caller.
        async IAsyncEnumerable<T> Stream(Route route, long epoch, CommandDefinition command, [EnumeratorCancellation] CancellationToken cancellationToken)
        {
            // The stream holds the connection from its first row until it ends or is disposed.
            using var operation = Owner.EnterOperation();
            var inTransaction = Owner.Session.InTransaction;
            var yielded = false;
            for (var attempt = 0; ; attempt++)
            {
                var parts = route.Parts;
                Exception? refused = null;
                var rerunAt = -1;
                for (var i = 0; i < (parts?.Length ?? 1) && refused is null; i++)
                {
                    var shard = parts is null ? route.Shard : parts[i].Shard;
                    var bound = parts is null ? RoutedRead(command, route) : ReadPart(command, parts[i]);
                    var rows = StreamRoutedAsync(shard, "QueryUnbuffered", command.CommandText, bound,
                        (c, cmd) => ShardRowReader.ReadRoutedAsync<T>(c, cmd, inTransaction), cancellationToken).GetAsyncEnumerator(cancellationToken);
                    var partYielded = false;
                    var again = false;
                    await using (rows.ConfigureAwait(false))
                    {
                        while (true)
                        {
                            try
                            {
                                if (!await rows.MoveNextAsync().ConfigureAwait(false))
                                {
                                    break;
                                }
                            }
                            catch (Exception e) when (!partYielded && rerunAt != i && MayRerunUnchecked(e, shard, command))
                            {
                                // The check failed before the part's first row: the part runs again, unchecked, alone.
                                again = true;
                                rerunAt = i;
                                break;
                            }
                            catch (Exception e) when (!yielded && MayRetryRefused(e, attempt, shard, command))
                            {
                                refused = e;
                                break;
                            }

                            yielded = partYielded = true;
                            yield return rows.Current;
                        }
                    }

                    if (again)
                    {
                        i--;
                    }
                }

                if (refused is null)
                {
                    yield break;
                }

                if (RouteByRefusal(refused, attempt, route, epoch, command) is { } hinted)
                {
                    route = hinted;
                    continue;
                }

                if (!await WaitForNewerMapAsync(epoch, cancellationToken).ConfigureAwait(false))
                {
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(refused);
                }

                epoch = Owner.DataSource.Map.Epoch;
                route = ResolveChecked(command, typeof(T));
            }
        }
    }

    private async Task<T> QueryOneAsync<T>(CommandDefinition command, bool orDefault, bool single)
    {
        var epoch = Owner.DataSource.Map.Epoch; // before the route: a refusal waits for a map newer than the one it was routed by
        var route = ResolveChecked(command, typeof(T));
        var writes = WriteFence.ChangesData(command.CommandText);
        using var operation = Owner.EnterOperation();
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return await QueryOneRoutedAsync<T>(route, epoch, command, orDefault, single, writes).ConfigureAwait(false);
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
            route = ResolveChecked(command, typeof(T));
        }
    }

    private async Task<T> QueryOneRoutedAsync<T>(Route route, long epoch, CommandDefinition command, bool orDefault, bool single, bool writes)
    {
        if (!route.IsSingle)
        {
            return First(await QuerySplitAsync<T>(route, epoch, command, writes).ConfigureAwait(false), orDefault, single);
        }

        var name = QueryOneName(orDefault, single);
        return await RunRoutedAsync(route.Shard, name, command.CommandText, writes, (Command: QueryBound(command, route, writes), OrDefault: orDefault, Single: single),
            static (c, s) => QueryRowAsync<T>(c, s.Command, s.OrDefault, s.Single), command.CancellationToken).ConfigureAwait(false);
    }

    // epoch: the map's, read before the route was resolved.
    private async Task<List<T>> QuerySplitAsync<T>(Route route, long epoch, CommandDefinition command, bool writes, int attempt = 0)
    {
        try
        {
            var perShard = await RunPartsAsync(route, command, "Query", writes, static (c, cmd) => c.QueryAsync<T>(cmd),
                writes ? static rows => rows.Count() : null).ConfigureAwait(false);
            return perShard.SelectMany(rows => rows).ToList();
        }
        catch (BroadcastWriteException e) when (e.PartResults is not null && MayRerunRefusedParts(e, attempt, route, command))
        {
            if (!await WaitForNewerMapAsync(epoch, command.CancellationToken).ConfigureAwait(false))
            {
                throw;
            }

            return await RerunRefusedQueryPartsAsync<T>(e, route, command, attempt).ConfigureAwait(false);
        }
    }

    // A write through Query split over shards whose refused parts run again, each alone and routed by the newer map (as
    // RerunRefusedPartsAsync does for Execute): the caller gets the rows of the parts that applied the first time and of
    // those run again, in route order. A part that fails then reports what every round applied.
    private async Task<List<T>> RerunRefusedQueryPartsAsync<T>(BroadcastWriteException refusal, Route route, CommandDefinition command, int attempt)
    {
        var names = Owner.DataSource.Map.ShardNames;
        var original = command.Parameters!;
        var applied = new Dictionary<string, int>(refusal.AffectedRows);
        var rows = new List<T>();
        var parts = route.Parts!;
        for (var i = 0; i < parts.Length; i++)
        {
            var part = parts[i];
            if (refusal.PartResults![i] is IEnumerable<T> kept)
            {
                rows.AddRange(kept);
                continue;
            }

            var partCommand = new CommandDefinition(command.CommandText, part.Parameters, command.Transaction, command.CommandTimeout,
                command.CommandType, command.Flags, command.CancellationToken);
            Route Again() => part.Batch is { } group
                ? RouteResolver.BatchAgain(Owner.DataSource.Map, original, group)
                : RouteResolver.SplitAgain(Owner.DataSource.Map, Owner.DataSource.KeyNames, original, part.Keys!);
            try
            {
                var epoch = Owner.DataSource.Map.Epoch;
                var again = await QueryPartFollowingMovesAsync<T>(Again(), epoch, partCommand, attempt + 1, Again).ConfigureAwait(false);
                rows.AddRange(again);
                applied[names[part.Shard]] = applied.GetValueOrDefault(names[part.Shard]) + again.Count;
            }
            catch (BroadcastWriteException e)
            {
                foreach (var (shard, count) in e.AffectedRows)
                {
                    applied[shard] = applied.GetValueOrDefault(shard) + count;
                }

                throw ShardTasks.Failed(e.Failures, applied);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                var shard = e.Data[ShardKitException.ShardDataKey] as string ?? names[part.Shard];
                throw ShardTasks.Failed([new ShardFailure(shard, e)], applied);
            }
        }

        return rows;
    }

    // One refused part of a write through Query, run by the newer map: on one shard (following a further move as a routed
    // query does) or split again.
    private async Task<List<T>> QueryPartFollowingMovesAsync<T>(Route route, long epoch, CommandDefinition command, int firstAttempt, Func<Route> resolve)
    {
        for (var attempt = firstAttempt; ; attempt++)
        {
            if (!route.IsSingle)
            {
                return await QuerySplitAsync<T>(route, epoch, command, writes: true, attempt).ConfigureAwait(false);
            }

            try
            {
                return (await RunRoutedAsync(route.Shard, "Query", command.CommandText, true, QueryBound(command, route, true),
                    static (c, cmd) => c.QueryAsync<T>(cmd), command.CancellationToken).ConfigureAwait(false)).AsList();
            }
            catch (Exception e) when (MayFollowMove(e, attempt, route, command, read: false))
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
            route = resolve();
        }
    }

    // Each part runs on its own shard's connection, all at once; results come back in shard order.
    // A write passes affectedRows, so a partial failure also says what applied on the other shards.
    private async Task<TResult[]> RunPartsAsync<TResult>(Route route, CommandDefinition command, string operation, bool isWrite,
        Func<NpgsqlConnection, CommandDefinition, Task<TResult>> run, Func<TResult, int>? affectedRows = null)
    {
        var parts = route.Parts!;
        var tasks = new Task<TResult>[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            var part = parts[i];
            tasks[i] = RunPartAsync(part);
        }

        try
        {
            return await ShardTasks.WhenAllAsync(tasks, parts.Select(p => Owner.DataSource.Map.ShardNames[p.Shard]).ToArray(), affectedRows)
                .ConfigureAwait(false);
        }
        catch (BroadcastWriteException e) when (affectedRows is not null)
        {
            e.PartResults = tasks.Select(t => t.IsCompletedSuccessfully ? (object?)t.Result : null).ToArray();
            throw;
        }

        Task<TResult> RunPartAsync(RoutePart part) =>
            RunRoutedAsync(part.Shard, operation, command.CommandText, isWrite, isWrite ? FencedPart(command, part) : ReadPart(command, part),
                run, command.CancellationToken).AsTask();
    }
}

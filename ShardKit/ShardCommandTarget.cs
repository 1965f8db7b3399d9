using System.Data;
using Dapper;
using Npgsql;

namespace ShardKit;

/// <summary>
/// The Dapper-shaped commands every routed target offers: <see cref="ShardedConnection"/> (routes by the shard key in
/// the parameters) and the scopes <see cref="ShardedConnection.ForKey"/> and <see cref="ShardedConnection.OnShard"/>.
/// Each call resolves its shard first, then runs Dapper on that shard's real <see cref="NpgsqlConnection"/>.
/// </summary>
public abstract partial class ShardCommandTarget
{
    private protected ShardCommandTarget()
    {
    }

    private protected abstract ShardedConnection Owner { get; }

    private protected abstract Route Resolve(object? parameters, Type? resultType);

    /// <summary>The read policy of this target's reads (<see cref="ShardScope.WithReadPolicy"/>); null for the connection's.</summary>
    private protected virtual ReadPolicy? ReadPolicyOverride => null;

    private ValueTask<TResult> RunRoutedAsync<TState, TResult>(int shard, string operation, string? sql, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, Task<TResult>> work, CancellationToken cancellationToken) =>
        Owner.RunOnShardAsync(shard, operation, sql, isWrite, state, work, cancellationToken, ReadPolicyOverride);

    private TResult RunRouted<TState, TResult>(int shard, string operation, string? sql, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, TResult> work) =>
        Owner.RunOnShard(shard, operation, sql, isWrite, state, work, ReadPolicyOverride);

    private IAsyncEnumerable<T> StreamRoutedAsync<TState, T>(int shard, string operation, string? sql, TState state,
        Func<NpgsqlConnection, TState, IAsyncEnumerable<T>> query, CancellationToken cancellationToken) =>
        Owner.StreamOnShardAsync(shard, operation, sql, state, query, cancellationToken, ReadPolicyOverride);

    /// <summary>
    /// Whether a write may carry its distributed transaction's first statement on the shard (the lock bound) in front of
    /// its own text, saving that statement's round trip: inside a distributed transaction, for plain text Npgsql splits
    /// into statements itself (named parameters; no <c>$</c> that could be a positional one or a dollar quote).
    /// </summary>
    private bool CanCarrySetup(in CommandDefinition command) =>
        Owner.Session.Enlistment is { IsActive: true } && IsPlainText(command);

    private static bool IsPlainText(in CommandDefinition command) => command.CommandType is null or CommandType.Text && IsPlainText(command.CommandText);

    /// <summary>Text Npgsql splits into statements itself: named parameters, no <c>$</c> that could be a positional one or a dollar quote.</summary>
    private protected static bool IsPlainText(string? text) => text is not null && !text.Contains('$', StringComparison.Ordinal) && SqlRewriting;

    private static readonly bool SqlRewriting = !AppContext.TryGetSwitch("Npgsql.EnableSqlRewriting", out var enabled) || enabled;

    /// <summary>
    /// The fence statement a write sends in front of its own when the data source follows a stored map (so the shards
    /// carry the fence): it names the write's buckets, and the shard refuses the write when it does not own one of them,
    /// even when the write touches no row there. Without it, an update or delete routed by a map older than a finished
    /// move would find nothing on the old owner and succeed with 0 rows. Null for text Npgsql does not split into
    /// statements (a <c>$</c>, a stored procedure), for text that does not start as a data-changing statement, and for
    /// parameters of a custom <see cref="SqlMapper.IDynamicParameters"/>: the rows' own check still runs. The fence
    /// statement's text is constant (the buckets are a parameter), so Dapper and Npgsql cache one plan for it.
    /// </summary>
    private bool MayFence(in CommandDefinition command, int shard, int[] buckets) =>
        buckets.Length > 0 && IsPlainText(command) && WriteFence.ChangesData(command.CommandText)
        && command.Parameters is null or DynamicParameters or not SqlMapper.IDynamicParameters
        && !(command.Parameters is DynamicParameters dynamic && MayHaveOutputs(dynamic))
        && Owner.DataSource.Shards.NamesBuckets(shard);

    // Npgsql refuses output parameters on text of several statements, and Dapper writes them back only into the object it
    // was given: a write with any is left as it is (its rows are still checked). Dapper does not expose the directions,
    // so its list is read by reflection; when that fails the write is taken to have some.
    private static readonly System.Reflection.FieldInfo? DynamicParameterList =
        typeof(DynamicParameters).GetField("parameters", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance);

    private static readonly System.Reflection.PropertyInfo? DirectionOf =
        typeof(DynamicParameters).GetNestedType("ParamInfo", System.Reflection.BindingFlags.NonPublic)?.GetProperty("ParameterDirection");

    private static bool MayHaveOutputs(DynamicParameters parameters)
    {
        if (DirectionOf is null || DynamicParameterList?.GetValue(parameters) is not System.Collections.IDictionary list)
        {
            return true;
        }

        foreach (var info in list.Values)
        {
            if (DirectionOf.GetValue(info) is not ParameterDirection.Input)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Whether a read by key names its buckets to the shard's fence (<see cref="WriteFence.OwnedRead"/>): one of them
    /// moves by the map (<see cref="ShardMap.AnyMoving"/>), and the text is a plain query Npgsql splits itself, with
    /// parameters the fence's can join (as for <see cref="MayFence"/>). Reads of buckets that do not move cost nothing.
    /// </summary>
    private bool MayNameRead(in CommandDefinition command, int shard, int[] buckets) =>
        buckets.Length > 0 && Owner.DataSource.Shards.Follower is not null && Owner.DataSource.Map.AnyMoving(buckets) && IsPlainText(command)
        && Owner.DataSource.Shards.SendsReadCheck(shard)
        && WriteFence.IsQuery(command.CommandText)
        && command.Parameters is null or DynamicParameters or not SqlMapper.IDynamicParameters
        && !(command.Parameters is DynamicParameters dynamic && MayHaveOutputs(dynamic));

    /// <summary>The write with its buckets named to the shard's fence in front of it (see <see cref="MayFence"/>).</summary>
    private CommandDefinition Fenced(in CommandDefinition command, int shard, int[] buckets) =>
        MayFence(command, shard, buckets) ? Named(command, buckets, WriteFence.Named) : command;

    /// <summary>A read by key, its buckets named to the shard's fence in front of it while one of them moves (see <see cref="MayNameRead"/>).</summary>
    private CommandDefinition FencedRead(in CommandDefinition command, int shard, int[] buckets) =>
        MayNameRead(command, shard, buckets) ? Named(command, buckets, WriteFence.OwnedRead) : command;

    private static CommandDefinition Named(in CommandDefinition command, int[] buckets, string statement)
    {
        // The caller's parameters as Dapper's template (bound by the same cached code), plus the buckets.
        var parameters = new DynamicParameters(command.Parameters);
        parameters.Add(WriteFence.BucketsParameter, WriteFence.BucketList(buckets), DbType.String);
        return new CommandDefinition(statement + ";\n" + command.CommandText, parameters, command.Transaction, command.CommandTimeout,
            command.CommandType, command.Flags, command.CancellationToken);
    }

    /// <summary>A single-shard write, fenced by the buckets of the keys that placed its route.</summary>
    private CommandDefinition FencedWrite(in CommandDefinition command, in Route route) =>
        WriteFence.ChangesData(command.CommandText) && Owner.DataSource.Shards.NamesBuckets(route.Shard)
            ? Fenced(Bind(command, route.Shard, command.Parameters), route.Shard, RouteResolver.BucketsOf(Owner.DataSource.Map, route))
            : Bind(command, route.Shard, command.Parameters);

    /// <summary>A single-shard read, its buckets named to the fence while one of them moves.</summary>
    private CommandDefinition RoutedRead(in CommandDefinition command, in Route route) =>
        Owner.DataSource.Map.MovesInFlight && Owner.DataSource.Shards.Follower is not null
            ? FencedRead(Bind(command, route.Shard, command.Parameters), route.Shard, RouteResolver.BucketsOf(Owner.DataSource.Map, route))
            : Bind(command, route.Shard, command.Parameters);

    /// <summary>One shard's part of a split key list read, its buckets named to the fence while one of them moves.</summary>
    private CommandDefinition ReadPart(in CommandDefinition command, in RoutePart part) =>
        Owner.DataSource.Map.MovesInFlight && Owner.DataSource.Shards.Follower is not null && part.Keys is not null
            ? FencedRead(Bind(command, part.Shard, part.Parameters), part.Shard, RouteResolver.BucketsOf(Owner.DataSource.Map, part.Keys))
            : Bind(command, part.Shard, part.Parameters);

    /// <summary>One shard's part of a split key list, fenced by the part's buckets.</summary>
    private CommandDefinition FencedPart(in CommandDefinition command, in RoutePart part) =>
        part.Keys is null || !WriteFence.ChangesData(command.CommandText) || !Owner.DataSource.Shards.NamesBuckets(part.Shard)
            ? Bind(command, part.Shard, part.Parameters)
            : Fenced(Bind(command, part.Shard, part.Parameters), part.Shard, RouteResolver.BucketsOf(Owner.DataSource.Map, part.Keys));

    /// <summary>The buckets one shard's share of an item list names to the fence (see <see cref="PipelinedBatch"/>); null for none.</summary>
    private string? FenceOfItems(in CommandDefinition command, object? items, BatchGroup group, int shard) =>
        items is null || command.CommandText is null || !WriteFence.ChangesData(command.CommandText)
            ? null
            : Owner.DataSource.Shards.NamesBuckets(shard) && RouteResolver.BucketsOf(Owner.DataSource.Map, items, group) is { Length: > 0 } buckets
                ? WriteFence.BucketList(buckets) : null;

    /// <summary>Runs a routed write, with the transaction's pending setup statement in front of it when there is one.</summary>
    private static async Task<int> ExecuteCarryingSetupAsync(NpgsqlConnection connection, ShardSession session, int shard, CommandDefinition command)
    {
        if (session.Enlistment?.PendingSetup(shard) is not { } setup)
        {
            return await connection.ExecuteAsync(command).ConfigureAwait(false);
        }

        var rows = await connection.ExecuteAsync(new CommandDefinition(setup + ";\n" + command.CommandText, command.Parameters,
            command.Transaction, command.CommandTimeout, command.CommandType, command.Flags, command.CancellationToken)).ConfigureAwait(false);
        session.Enlistment.SetupSent(shard);
        return rows;
    }

    private Route ResolveChecked(in CommandDefinition command, Type? resultType)
    {
        var route = Resolve(command.Parameters, resultType);
        Owner.CheckAgainstTransaction(route, command.Transaction);
        return route;
    }

    // How many times a write a shard refused (its bucket moved) is routed again by a newer map.
    internal const int MoveAttempts = 4;

    /// <summary>
    /// Whether a command a shard refused because its bucket moved may run again by a newer map: the data source follows a
    /// stored map, no transaction is open (inside one the refusal reaches the caller), and nothing of the command was
    /// kept (one shard). A write split over shards reruns only its refused parts (MayRerunRefusedParts); a query split
    /// over shards (<paramref name="read"/>: the caller reads, and the text is a plain query) runs again whole, as its
    /// parts changed nothing. Execute's loops pass false: text the lexer takes for a read (<c>call app.bump(@ids)</c>,
    /// <c>select app.add(…)</c> per item) may still write through a procedure, and its parts that ran were kept.
    /// </summary>
    private bool MayFollowMove(Exception error, int attempt, in Route route, in CommandDefinition command, bool read)
    {
        // A fence without the read check is remembered first, whatever follows: inside a transaction the failed check
        // aborted it, and the next one must not fail the same way.
        if (route.IsSingle && WriteFence.IsMissingFence(error))
        {
            Owner.DataSource.Shards.FenceMissing(route.Shard); // the error goes on; the next write asks the shard again
        }

        var missingCheck = route.IsSingle
            ? NoticedMissingReadCheck(error, route.Shard)
            : error is ShardAggregateException failed && failed.Failures.Count(f => NoticedMissingReadCheck(f.Error, Owner.DataSource.Map.IndexOf(f.Shard))) > 0;
        return attempt < MoveAttempts && Owner.DataSource.Shards.Follower is not null && !Owner.Session.InTransaction && command.Transaction is null
            && (route.IsSingle
                ? missingCheck || ShardBucketMovedException.IsMoved(error)
                : read && error is ShardAggregateException split and not BroadcastWriteException && WriteFence.IsQuery(command.CommandText)
                  && (missingCheck || split.Failures.Any(f => ShardBucketMovedException.IsMoved(f.Error))));
    }

    /// <summary>
    /// Whether <paramref name="error"/> says the fence of <paramref name="shard"/> has no <c>shardkit.check_owned</c> (made
    /// by an older ShardKit, and no move of this version ran there since): the shard is then read without the check for a
    /// while (see <c>ShardSet.ReadCheckMissing</c>), and the read runs again at once (it failed before
    /// its text ran).
    /// </summary>
    private bool NoticedMissingReadCheck(Exception? error, int shard)
    {
        if (shard < 0 || !WriteFence.IsMissingReadCheck(error))
        {
            return false;
        }

        Owner.DataSource.Shards.ReadCheckMissing(shard);
        return true;
    }

    /// <summary>Whether one shard's refusal of a command that kept nothing may be followed (a stream before its first row).</summary>
    private bool MayRetryRefused(Exception error, int attempt, int shard, in CommandDefinition command) =>
        attempt < MoveAttempts && Owner.DataSource.Shards.Follower is not null && !Owner.Session.InTransaction && command.Transaction is null
        && ShardBucketMovedException.IsMoved(error);

    /// <summary>
    /// Whether one part of a stream, which handed out none of its rows, failed because the fence of <paramref name="shard"/>
    /// lacks the read check, and may run again without it (outside a transaction, which the failure aborted). The shard is
    /// remembered as unchecked either way.
    /// </summary>
    private bool MayRerunUnchecked(Exception error, int shard, in CommandDefinition command) =>
        NoticedMissingReadCheck(error, shard) && !Owner.Session.InTransaction && command.Transaction is null;

    /// <summary>
    /// Where a refused command may go at once, by the refusing shard's word: a move switched its bucket moments ago and
    /// this data source's map does not show it yet (the notified map comes some milliseconds later), so the command goes
    /// to the shard the refusal names instead of waiting for that map. Safe whatever the word says: that shard's fence
    /// takes the write only if it owns the bucket (a target still committing its taking makes the write wait on its lock).
    /// Only the first refusal of a command is followed so, only for a route of that one bucket, to another shard this
    /// data source lists, only while the map is the one the command was routed by, and only for a write that names its
    /// buckets to the fence there (<see cref="MayFence"/>): a write that does not is checked by the rows it touches, and
    /// on a shard that neither owns the bucket nor keeps its rows it would touch none and pass unrefused. Null otherwise
    /// (wait for the map).
    /// </summary>
    private Route? RouteByRefusal(Exception error, int attempt, in Route route, long epoch, in CommandDefinition command)
    {
        if (WriteFence.IsMissingReadCheck(error) || error is ShardAggregateException split && split.Failures.Any(f => WriteFence.IsMissingReadCheck(f.Error)))
        {
            return route; // the same route at once, now without the check where the fence lacks it
        }

        // Any attempt routed by the map still current may follow the refusal (a map refreshed during the first attempt that
        // still names the refusing shard used to end in a wait for a newer map, which does not come while a stopped move
        // leaves the target owning buckets the catalog has not switched).
        var map = Owner.DataSource.Map;
        if (!route.IsSingle || map.Epoch != epoch || ShardBucketMovedException.Find(error, map.ShardNames[route.Shard]) is not
            { MovedTo: { } movedTo } refusal || !map.Contains(movedTo))
        {
            return null;
        }

        var shard = map.IndexOf(movedTo);
        var buckets = RouteResolver.BucketsOf(map, route);
        return shard != route.Shard && buckets.Length > 0 && Array.TrueForAll(buckets, b => b == refusal.Bucket) && (MayFence(command, shard, buckets) || MayNameRead(command, shard, buckets))
            ? route.On(shard)
            : null;
    }

    /// <summary>Waits for a map newer than the one the refused command was routed by; false when none came in time.</summary>
    private Task<bool> WaitForNewerMapAsync(long epoch, CancellationToken cancellationToken) =>
        Owner.DataSource.Shards.Follower!.WaitForNewerMapAsync(epoch, cancellationToken);

    private CommandDefinition Bind(in CommandDefinition command, int shard, object? parameters) =>
        new(command.CommandText, parameters, Owner.TransactionOn(shard), command.CommandTimeout, command.CommandType,
            command.Flags, command.CancellationToken);

    // Only plain text runs as a pipelined batch; a stored procedure keeps Dapper's per-row path.
    private static bool IsItemBatch(in Route route, in CommandDefinition command) =>
        route.Parts is { Length: > 0 } parts && parts[0].Batch is not null && command.CommandType is null or CommandType.Text;

    private static ShardRoutingException ScalarAcrossShards() => new(
        "The keys of this command live on several shards, and one scalar cannot be combined from them without saying how. " +
        "Use AllShards() or Shards(names) with a merge (for example Merge.Sum<long>()), or query per key.");

    private static T First<T>(List<T> rows, bool orDefault, bool single)
    {
        if (rows.Count == 0)
        {
            return orDefault ? default! : throw new InvalidOperationException("Sequence contains no elements");
        }

        if (single && rows.Count > 1)
        {
            throw new InvalidOperationException("Sequence contains more than one element");
        }

        return rows[0];
    }
}

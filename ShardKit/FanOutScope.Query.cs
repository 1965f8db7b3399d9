using System.Data;
using Dapper;
using Npgsql;

namespace ShardKit;

public sealed partial class FanOutScope
{
    /// <summary>
    /// Runs a query on every targeted shard in parallel and merges the rows as <paramref name="merge"/> says. With no
    /// plan the rows come in arrival order, and SQL that orders, limits, groups, removes duplicates or aggregates at its
    /// top level is refused with <see cref="ShardMergeRequiredException"/> (pass the plan, or <see cref="Merge.Concat{T}"/>
    /// for arrival order on purpose). With partial results the result lists the shards that failed.
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public Task<FanOutResult<T>> QueryAsync<T>(string sql, object? param = null, MergePlan<T>? merge = null, int? commandTimeout = null,
        CommandType? commandType = null, CancellationToken cancellationToken = default) =>
        QueryAsync(Command(sql, param, commandTimeout, commandType, cancellationToken), merge);

    /// <summary>Runs a query on every targeted shard in parallel and merges the rows.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public async Task<FanOutResult<T>> QueryAsync<T>(CommandDefinition command, MergePlan<T>? merge)
    {
        var (rows, failures) = await CollectAsync(command, merge ?? Unplanned(command, "Query", Merge.Concat<T>()), "Query", static r => r.Row)
            .ConfigureAwait(false);
        return new FanOutResult<T>(rows, failures);
    }

    /// <summary>Like <see cref="QueryAsync{T}(string, object?, MergePlan{T}?, int?, CommandType?, CancellationToken)"/>, each row tagged with its shard's name.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public async Task<FanOutResult<ShardRow<T>>> QueryWithShardAsync<T>(string sql, object? param = null, MergePlan<T>? merge = null,
        int? commandTimeout = null, CommandType? commandType = null, CancellationToken cancellationToken = default)
    {
        var command = Command(sql, param, commandTimeout, commandType, cancellationToken);
        var (rows, failures) = await CollectAsync(command, merge ?? Unplanned(command, "QueryWithShard", Merge.Concat<T>()), "Query", static r => r)
            .ConfigureAwait(false);
        return new FanOutResult<ShardRow<T>>(rows, failures);
    }

    /// <summary>
    /// Streams the merged rows without buffering them: memory stays proportional to the number of shards. Pass a
    /// cancellation token with <c>WithCancellation</c>; stopping early cancels the shards' queries on the servers.
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public FanOutStream<T> QueryUnbufferedAsync<T>(string sql, object? param = null, MergePlan<T>? merge = null, int? commandTimeout = null,
        CommandType? commandType = null) =>
        QueryUnbufferedAsync(Command(sql, param, commandTimeout, commandType, default), merge);

    /// <summary>Streams the merged rows without buffering them.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public FanOutStream<T> QueryUnbufferedAsync<T>(CommandDefinition command, MergePlan<T>? merge)
    {
        var plan = merge ?? Unplanned(command, "QueryUnbuffered", Merge.Concat<T>());
        return new FanOutStream<T>((report, token) => RunAsync(command, plan, "Query", report, token));
    }

    /// <summary>
    /// The first row: with no plan, the first row any shard returns (the others are cancelled at once, or read to their
    /// end inside a transaction, where a cancel would abort it); with an ordered plan, the first row of the merged order.
    /// Throws when no shard has a row.
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public async Task<T> QueryFirstAsync<T>(string sql, object? param = null, MergePlan<T>? merge = null, int? commandTimeout = null,
        CommandType? commandType = null, CancellationToken cancellationToken = default)
    {
        var rows = await FirstRowsAsync(Command(sql, param, commandTimeout, commandType, cancellationToken), merge, 1).ConfigureAwait(false);
        return rows.Count > 0 ? rows[0] : throw NoRows();
    }

    /// <summary>The first row (see <see cref="QueryFirstAsync{T}"/>), or default when no shard has a row.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public async Task<T?> QueryFirstOrDefaultAsync<T>(string sql, object? param = null, MergePlan<T>? merge = null, int? commandTimeout = null,
        CommandType? commandType = null, CancellationToken cancellationToken = default)
    {
        var rows = await FirstRowsAsync(Command(sql, param, commandTimeout, commandType, cancellationToken), merge, 1).ConfigureAwait(false);
        return rows.Count > 0 ? rows[0] : default;
    }

    /// <summary>The only row across every shard; throws when there is none or more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public async Task<T> QuerySingleAsync<T>(string sql, object? param = null, int? commandTimeout = null,
        CommandType? commandType = null, CancellationToken cancellationToken = default)
    {
        var rows = await FirstRowsAsync<T>(Command(sql, param, commandTimeout, commandType, cancellationToken), null, 2).ConfigureAwait(false);
        return rows.Count switch
        {
            1 => rows[0],
            0 => throw NoRows(),
            _ => throw MoreThanOne(),
        };
    }

    /// <summary>The only row across every shard, or default when there is none; throws when there is more than one.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public async Task<T?> QuerySingleOrDefaultAsync<T>(string sql, object? param = null, int? commandTimeout = null,
        CommandType? commandType = null, CancellationToken cancellationToken = default)
    {
        var rows = await FirstRowsAsync<T>(Command(sql, param, commandTimeout, commandType, cancellationToken), null, 2).ConfigureAwait(false);
        return rows.Count switch
        {
            1 => rows[0],
            0 => default,
            _ => throw MoreThanOne(),
        };
    }

    /// <summary>
    /// Runs a scalar query on every targeted shard in parallel and combines the first row of each as
    /// <paramref name="merge"/> says: <c>ExecuteScalarAsync("select count(*) from orders", Merge.Count())</c>.
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public Task<T> ExecuteScalarAsync<T>(string sql, ScalarMerge<T> merge, object? param = null, int? commandTimeout = null,
        CommandType? commandType = null, CancellationToken cancellationToken = default) =>
        ExecuteScalarAsync(Command(sql, param, commandTimeout, commandType, cancellationToken), merge);

    /// <summary>Runs a scalar query on every targeted shard in parallel and combines the results.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public async Task<T> ExecuteScalarAsync<T>(CommandDefinition command, ScalarMerge<T> merge)
    {
        ArgumentNullException.ThrowIfNull(merge);
        using var activity = ShardKitTelemetry.StartFanOut("ExecuteScalar", _shards.Length, merge.Kind);
        using var run = new FanOutRun(_connection.Session, _shards, Options, "ExecuteScalar", command.CommandText, command.CancellationToken);
        var results = await run.RunEachAsync(async (connection, token) =>
        {
            var reader = await connection.ExecuteReaderAsync(ShardRowReader.WithToken(command, token)).ConfigureAwait(false);
            await using var _ = reader.ConfigureAwait(false);
            if (!await reader.ReadAsync(token).ConfigureAwait(false))
            {
                return null;
            }

            var values = new object?[reader.FieldCount];
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = await reader.IsDBNullAsync(i, token).ConfigureAwait(false) ? null : reader.GetValue(i);
            }

            return values;
        }).ConfigureAwait(false);

        var rows = results.Select(r => r.Result).OfType<object?[]>().ToList();
        if (rows.FirstOrDefault(r => r.Length < merge.Columns) is { } narrow)
        {
            throw new ShardKitException(
                $"Merge '{merge.Kind}' needs {merge.Columns} columns from each shard but the query returned {narrow.Length}; " +
                (merge.Kind == "avg" ? "select the sum and the count: select sum(x), count(x) from …" : "select the value to combine."));
        }

        activity?.SetTag(ShardKitTelemetry.RowsTag, rows.Count);
        ShardKitTelemetry.RecordRowsMerged(rows.Count, merge.Kind, "ExecuteScalar");
        return merge.Combine(rows);
    }

    private async Task<List<T>> FirstRowsAsync<T>(CommandDefinition command, MergePlan<T>? merge, int count)
    {
        var plan = merge is null
            ? (count == 1 ? Unplanned(command, "QueryFirst", Merge.First<T>()) : Unplanned(command, "QuerySingle", Merge.Concat<T>().Take(count)))
            : merge.Take(count);
        var (rows, _) = await CollectAsync(command, plan, count == 1 ? "QueryFirst" : "QuerySingle", static r => r.Row).ConfigureAwait(false);
        return rows;
    }

    /// <summary>
    /// Reads the merged rows into a list. Without a limit that could stop the shards early, each shard reads its rows
    /// to the end on its own (every shard in parallel, parsing included) and the merge runs over those buffers.
    /// </summary>
    private async Task<(List<TRow> Rows, IReadOnlyList<ShardFailure> Failures)> CollectAsync<T, TRow>(CommandDefinition command,
        MergePlan<T> plan, string operation, Func<ShardRow<T>, TRow> select,
        Func<NpgsqlConnection, CommandDefinition, CancellationToken, IAsyncEnumerable<T>>? read = null)
    {
        IReadOnlyList<ShardFailure> failures = [];
        var rows = new List<TRow>();
        var merged = new MergedRows<T>(this, command, plan, operation, f => failures = f, default, wholeShards: plan.TakeCount is null, read);
        await using (((IAsyncDisposable)merged).ConfigureAwait(false))
        {
            await merged.CollectAsync(rows, select).ConfigureAwait(false);
        }

        return (rows, failures);
    }

    /// <summary>Starts every shard's query at once, merges their streams, and cancels whatever is still running at the end.</summary>
    private MergedRows<T> RunAsync<T>(CommandDefinition command, MergePlan<T> plan, string operation,
        Action<IReadOnlyList<ShardFailure>> reportFailures, CancellationToken cancellationToken) =>
        new(this, command, plan, operation, reportFailures, cancellationToken, wholeShards: false, read: null);

    /// <summary>
    /// The plan for a read given none: <paramref name="fallback"/> (arrival order), unless the SQL orders, limits,
    /// groups, removes duplicates or aggregates at its top level; then the shards' rows side by side would be silently
    /// wrong, so the caller must choose a plan (Merge.Concat on purpose included).
    /// </summary>
    private static MergePlan<T> Unplanned<T>(CommandDefinition command, string operation, MergePlan<T> fallback)
    {
        var clauses = command.CommandText is { } sql ? SqlShape.Of(sql) : SqlClauses.None;
        return clauses == SqlClauses.None ? fallback : throw new ShardMergeRequiredException(operation, clauses);
    }

    private static CommandDefinition Command(string sql, object? param, int? commandTimeout, CommandType? commandType,
        CancellationToken cancellationToken) =>
        new(sql, param, null, commandTimeout, commandType, CommandFlags.Buffered, cancellationToken);

    private static InvalidOperationException NoRows() => new("The query returned no row on any shard.");

    private static InvalidOperationException MoreThanOne() => new("The query returned more than one row across the shards.");
}

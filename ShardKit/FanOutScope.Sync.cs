using System.Data;

namespace ShardKit;

// Blocking forms for synchronous repositories. The shards still run in parallel; only the caller's thread waits.
public sealed partial class FanOutScope
{
    /// <summary>Runs a query on every targeted shard in parallel and merges the rows; see <see cref="QueryAsync{T}(string, object?, MergePlan{T}?, int?, CommandType?, CancellationToken)"/>.</summary>
    public FanOutResult<T> Query<T>(string sql, object? param = null, MergePlan<T>? merge = null, int? commandTimeout = null,
        CommandType? commandType = null) =>
        Wait(QueryAsync(sql, param, merge, commandTimeout, commandType));

    /// <summary>The first row; see <see cref="QueryFirstAsync{T}"/>.</summary>
    public T QueryFirst<T>(string sql, object? param = null, MergePlan<T>? merge = null, int? commandTimeout = null,
        CommandType? commandType = null) =>
        Wait(QueryFirstAsync(sql, param, merge, commandTimeout, commandType));

    /// <summary>The first row or default; see <see cref="QueryFirstOrDefaultAsync{T}"/>.</summary>
    public T? QueryFirstOrDefault<T>(string sql, object? param = null, MergePlan<T>? merge = null, int? commandTimeout = null,
        CommandType? commandType = null) =>
        Wait(QueryFirstOrDefaultAsync(sql, param, merge, commandTimeout, commandType));

    /// <summary>The only row across every shard; see <see cref="QuerySingleAsync{T}"/>.</summary>
    public T QuerySingle<T>(string sql, object? param = null, int? commandTimeout = null, CommandType? commandType = null) =>
        Wait(QuerySingleAsync<T>(sql, param, commandTimeout, commandType));

    /// <summary>The only row across every shard or default; see <see cref="QuerySingleOrDefaultAsync{T}"/>.</summary>
    public T? QuerySingleOrDefault<T>(string sql, object? param = null, int? commandTimeout = null, CommandType? commandType = null) =>
        Wait(QuerySingleOrDefaultAsync<T>(sql, param, commandTimeout, commandType));

    /// <summary>A scalar combined across shards; see <see cref="ExecuteScalarAsync{T}(string, ScalarMerge{T}, object?, int?, CommandType?, CancellationToken)"/>.</summary>
    public T ExecuteScalar<T>(string sql, ScalarMerge<T> merge, object? param = null, int? commandTimeout = null, CommandType? commandType = null) =>
        Wait(ExecuteScalarAsync(sql, merge, param, commandTimeout, commandType));

    private static T Wait<T>(Task<T> task) => task.GetAwaiter().GetResult();
}

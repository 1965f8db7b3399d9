using System.Data;

namespace ShardKit;

// The non-generic Query across shards: dynamic rows, merged by the same plans as typed rows. Keys of a dynamic row are
// read by column name with Merge.Column<TKey>(name).
public sealed partial class FanOutScope
{
    /// <summary>
    /// Runs a query on every targeted shard in parallel and returns the rows as dynamic objects, merged as
    /// <paramref name="merge"/> says; order by a column with <see cref="Merge.Column{TKey}(string)"/>:
    /// <c>Merge.OrderBy(Merge.Column&lt;DateTime&gt;("created_at")).Take(50)</c>. The same plan rules as the typed
    /// <see cref="QueryAsync{T}(string, object?, MergePlan{T}?, int?, CommandType?, CancellationToken)"/>.
    /// </summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public Task<FanOutResult<dynamic>> QueryAsync(string sql, object? param = null, MergePlan<dynamic>? merge = null,
        int? commandTimeout = null, CommandType? commandType = null, CancellationToken cancellationToken = default) =>
        QueryAsync<dynamic>(sql, param, merge, commandTimeout, commandType, cancellationToken);

    /// <summary>Runs a query on every targeted shard in parallel and returns the merged rows as dynamic objects.</summary>
    /// <include file="RoutedDocs.xml" path="docs/fanout/*" />
    public FanOutResult<dynamic> Query(string sql, object? param = null, MergePlan<dynamic>? merge = null, int? commandTimeout = null,
        CommandType? commandType = null) =>
        Wait(QueryAsync(sql, param, merge, commandTimeout, commandType));
}

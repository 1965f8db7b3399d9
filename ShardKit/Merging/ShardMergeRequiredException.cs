
namespace ShardKit;

/// <summary>
/// A fan-out read whose SQL orders, limits, removes duplicates, groups or aggregates at its top level was given no
/// merge plan: every shard would apply the clause to its own rows only, and the rows side by side would not be what one
/// database answers. Thrown before any shard is asked; the message names the plan to pass, or
/// <see cref="Merge.Concat{T}"/> to take the shards' rows in arrival order on purpose.
/// </summary>
public sealed class ShardMergeRequiredException : ShardKitException
{
    internal ShardMergeRequiredException(string operation, SqlClauses clauses)
        : base(Describe(operation, clauses))
    {
        Clauses = Names(clauses);
    }

    /// <summary>The top-level clauses found (ORDER BY, LIMIT, OFFSET, DISTINCT, GROUP BY, HAVING, aggregate).</summary>
    public IReadOnlyList<string> Clauses { get; }

    private static string[] Names(SqlClauses clauses) =>
    [
        .. Enum.GetValues<SqlClauses>().Where(c => c != SqlClauses.None && clauses.HasFlag(c)).Select(c => c switch
        {
            SqlClauses.OrderBy => "ORDER BY",
            SqlClauses.Limit => "LIMIT",
            SqlClauses.Offset => "OFFSET",
            SqlClauses.Distinct => "DISTINCT",
            SqlClauses.GroupBy => "GROUP BY",
            SqlClauses.Having => "HAVING",
            _ => "aggregate",
        }),
    ];

    private static string Describe(string operation, SqlClauses clauses)
    {
        var plans = new List<string>();
        if ((clauses & (SqlClauses.OrderBy | SqlClauses.Limit | SqlClauses.Offset)) != 0)
        {
            plans.Add("Merge.OrderBy(…)/Merge.OrderByDescending(…) with the query's ORDER BY keys, then .Skip(m).Take(n) " +
                      "for OFFSET/LIMIT (each shard's SQL: limit @ShardLimit)");
        }

        if ((clauses & SqlClauses.Distinct) != 0)
        {
            plans.Add("Merge.Distinct<T>() for DISTINCT");
        }

        if ((clauses & (SqlClauses.GroupBy | SqlClauses.Having)) != 0)
        {
            plans.Add("Merge.GroupBy(key, combine) for GROUP BY (apply HAVING after combining: one shard's partial group cannot judge it)");
        }

        if ((clauses & SqlClauses.Aggregate) != 0)
        {
            plans.Add("ExecuteScalarAsync(sql, Merge.Count()/Merge.Sum<T>()/Merge.Min<T>()/Merge.Max<T>()/Merge.Average()) " +
                      "for an aggregate over all rows, Merge.GroupBy(…) for one per group");
        }

        var noPlan = operation.StartsWith("QuerySingle", StringComparison.Ordinal)
            ? $" {operation} takes no plan: call QueryAsync with one."
            : "";
        return $"The fan-out {operation} has a top-level {string.Join(", ", Names(clauses))} but no merge plan: every shard " +
               "would apply it to its own rows only, and the rows side by side are not what one database answers. " +
               $"Pass a merge plan: {string.Join("; ", plans)}. Or pass Merge.Concat<T>() to take every shard's rows in " +
               $"arrival order on purpose.{noPlan}";
    }
}

using System.Collections.Concurrent;
using System.Collections.Frozen;

namespace ShardKit;

/// <summary>
/// Finds the clauses of a statement's top level (outside any parentheses but those around the whole query or a set
/// operation's branch: subqueries, CTE bodies, window clauses and aggregate arguments do not count) that every shard would apply to its own rows only: ORDER BY, LIMIT/FETCH,
/// OFFSET, DISTINCT (and UNION/INTERSECT/EXCEPT without ALL), GROUP BY, HAVING, and aggregate calls. Without a merge
/// plan the shards' answers, put side by side, are not what one database answers. Cached per SQL text.
/// </summary>
internal static class SqlShape
{
    // Bounded: an application's fan-out SQL is a fixed set; text built per call (values inlined) is analysed each time.
    private const int MaxCached = 4096;
    private static readonly ConcurrentDictionary<string, SqlClauses> Cache = new(StringComparer.Ordinal);

    private static readonly FrozenSet<string> Aggregates = new[]
    {
        "count", "sum", "min", "max", "avg", "array_agg", "string_agg", "bool_and", "bool_or", "every", "bit_and",
        "bit_or", "bit_xor", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "json_arrayagg",
        "json_objectagg", "xmlagg", "range_agg", "range_intersect_agg", "any_value", "stddev", "stddev_pop",
        "stddev_samp", "variance", "var_pop", "var_samp", "corr", "covar_pop", "covar_samp", "regr_avgx", "regr_avgy",
        "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy", "mode",
        "percentile_cont", "percentile_disc",
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    /// <summary>The top-level clauses of <paramref name="sql"/> that need a merge plan across shards.</summary>
    public static SqlClauses Of(string sql)
    {
        if (Cache.TryGetValue(sql, out var clauses))
        {
            return clauses;
        }

        clauses = Analyse(sql);
        if (Cache.Count < MaxCached)
        {
            Cache.TryAdd(sql, clauses);
        }

        return clauses;
    }

    internal static SqlClauses Analyse(string sql)
    {
        var tokens = SqlLexer.Tokenize(sql);
        var r = new TokenCursor(sql, tokens);
        var clauses = SqlClauses.None;
        // Per depth: whether it is the query's top level, and the last token seen there. Parentheses around a whole
        // query or a set operation's branch ("(select … limit 2) union all (select …)") keep their contents at the top
        // level: each shard applies those clauses to its own rows all the same.
        var topLevel = new List<bool> { true };
        var last = new List<int> { -1 };
        for (var i = 0; i < tokens.Count; i++)
        {
            var depth = tokens[i].Depth;
            var top = depth < topLevel.Count && topLevel[depth];
            if (tokens[i].Kind == SqlTokenKind.Word && top)
            {
                clauses |= Clause(r, i);
            }
            else if (tokens[i].Kind == SqlTokenKind.Open)
            {
                var inner = depth + 1;
                while (topLevel.Count <= inner)
                {
                    topLevel.Add(false);
                    last.Add(-1);
                }

                topLevel[inner] = top && StartsBranch(r, last[depth]);
                last[inner] = -1;
            }

            if (depth < last.Count)
            {
                last[depth] = i;
            }
        }

        return clauses;
    }

    // Whether a parenthesis after token `previous` (-1: the first of its level) opens a query of its own level: at the
    // start, after a set operation, or after a statement's end.
    private static bool StartsBranch(TokenCursor r, int previous) =>
        previous < 0 || r.IsWord(previous, "union") || r.IsWord(previous, "intersect") || r.IsWord(previous, "except") ||
        ((r.IsWord(previous, "all") || r.IsWord(previous, "distinct")) &&
            (r.IsWord(previous - 1, "union") || r.IsWord(previous - 1, "intersect") || r.IsWord(previous - 1, "except"))) ||
        (r.Kind(previous) == SqlTokenKind.Other && r.Text(previous) == ";");

    private static SqlClauses Clause(TokenCursor r, int i) => r.Text(i).ToLowerInvariant() switch
    {
        "order" when r.IsWord(i + 1, "by") => SqlClauses.OrderBy,
        "group" when r.IsWord(i + 1, "by") => SqlClauses.GroupBy,
        "having" => SqlClauses.Having,
        "limit" when !r.IsWord(i + 1, "all") => SqlClauses.Limit,
        "fetch" when r.IsWord(i + 1, "first") || r.IsWord(i + 1, "next") => SqlClauses.Limit,
        "offset" => SqlClauses.Offset,
        // Not "a IS DISTINCT FROM b", a comparison.
        "distinct" when r.IsWord(i - 1, "select") => SqlClauses.Distinct,
        "union" or "intersect" or "except" when !r.IsWord(i + 1, "all") => SqlClauses.Distinct,
        var word when Aggregates.Contains(word) && r.Kind(i + 1) == SqlTokenKind.Open && !IsWindowCall(r, i + 1) => SqlClauses.Aggregate,
        _ => SqlClauses.None,
    };

    /// <summary>Whether the call whose argument list opens at <paramref name="open"/> ends in OVER (…): a window function.</summary>
    private static bool IsWindowCall(TokenCursor r, int open)
    {
        var next = r.AfterParentheses(open);
        if (r.IsWord(next, "within") && r.IsWord(next + 1, "group"))
        {
            next = r.AfterParentheses(next + 2);
        }

        if (r.IsWord(next, "filter"))
        {
            next = r.AfterParentheses(next + 1);
        }

        return r.IsWord(next, "over");
    }

    private readonly struct TokenCursor(string sql, List<SqlToken> tokens)
    {
        public string Text(int i) => sql.Substring(tokens[i].Start, tokens[i].Length);

        public SqlTokenKind? Kind(int i) => i >= 0 && i < tokens.Count ? tokens[i].Kind : null;

        public bool IsWord(int i, string word) =>
            Kind(i) == SqlTokenKind.Word && sql.AsSpan(tokens[i].Start, tokens[i].Length).Equals(word, StringComparison.OrdinalIgnoreCase);

        /// <summary>The token after the parenthesis that closes the one at <paramref name="open"/> (past the end when none).</summary>
        public int AfterParentheses(int open)
        {
            if (Kind(open) != SqlTokenKind.Open)
            {
                return open;
            }

            var depth = tokens[open].Depth;
            for (var i = open + 1; i < tokens.Count; i++)
            {
                if (tokens[i].Kind == SqlTokenKind.Close && tokens[i].Depth == depth)
                {
                    return i + 1;
                }
            }

            return tokens.Count;
        }
    }
}

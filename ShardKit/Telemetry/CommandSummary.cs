using System.Collections.Concurrent;
using System.Collections.Frozen;

namespace ShardKit;

/// <summary>
/// What OpenTelemetry's database conventions read from a statement: its operation (the first SQL keyword, or the
/// statement a WITH leads to), the one table it touches when there is exactly one, and the span name built from them
/// ("SELECT orders", "DELETE", or "postgresql" when the text says nothing), and whether it changes data. Cached per SQL text.
/// </summary>
internal sealed record CommandSummary(string? Operation, string? Collection)
{
    /// <summary>
    /// Whether the text inserts, updates, deletes or merges rows: one of its statements starts as one of those, a WITH
    /// holds one (<c>with gone as (delete … returning *) select …</c>), or EXPLAIN ANALYZE runs one. A lock (<c>for update</c>) or an upsert's <c>do update</c>
    /// inside a query does not count.
    /// </summary>
    public bool ChangesData { get; private init; }

    // Bounded like SqlShape's cache: an application's SQL is a fixed set; text built per call is analysed each time.
    private const int MaxCached = 4096;
    private static readonly ConcurrentDictionary<string, CommandSummary> Cache = new(StringComparer.Ordinal);

    // The keywords a table name follows; a statement with more than one of them touches (or may touch) several tables.
    private static readonly FrozenSet<string> TableKeywords =
        new[] { "from", "join", "into", "update", "using", "table" }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    private static readonly FrozenSet<string> Statements =
        new[] { "select", "insert", "update", "delete", "merge", "values", "table" }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    public static readonly CommandSummary None = new(null, null);

    /// <summary>The span name: "{operation} {collection}", the operation alone, or the database system.</summary>
    public string SpanName { get; } =
        Operation is null ? ShardKitTelemetry.PostgreSql : Collection is null ? Operation : Operation + " " + Collection;

    public static CommandSummary Of(string? sql)
    {
        if (string.IsNullOrEmpty(sql))
        {
            return None;
        }

        if (Cache.TryGetValue(sql, out var summary))
        {
            return summary;
        }

        summary = Analyse(sql);
        if (Cache.Count < MaxCached)
        {
            Cache.TryAdd(sql, summary);
        }

        return summary;
    }

    internal static CommandSummary Analyse(string sql)
    {
        var tokens = SqlLexer.Tokenize(sql);
        var first = tokens.FindIndex(t => t.Kind == SqlTokenKind.Word);
        if (first < 0)
        {
            return None;
        }

        var operation = Text(sql, tokens[first]);
        if (operation.Equals("with", StringComparison.OrdinalIgnoreCase))
        {
            // WITH … AS (…) SELECT: the operation is the statement the common table expressions lead to.
            var main = tokens.FindIndex(first, t => t is { Kind: SqlTokenKind.Word, Depth: 0 } && Statements.Contains(Text(sql, t)));
            operation = main < 0 ? operation : Text(sql, tokens[main]);
        }

        return new CommandSummary(operation.ToUpperInvariant(), CollectionOf(sql, tokens, first)) { ChangesData = Changes(sql, tokens, first) };
    }

    private static readonly FrozenSet<string> DataVerbs = new[] { "insert", "update", "delete", "merge" }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    // Each statement of the text (split at top-level semicolons): one that starts with a data verb writes; one that
    // starts with WITH, or is EXPLAIN ANALYZE, writes when a data verb stands anywhere in it (a lock's FOR UPDATE and an
    // upsert's DO UPDATE aside).
    private static bool Changes(string sql, List<SqlToken> tokens, int first)
    {
        for (var start = first; start >= 0 && start < tokens.Count; start = NextStatement(sql, tokens, start))
        {
            var end = NextStatement(sql, tokens, start);
            end = end < 0 ? tokens.Count : end;
            if (tokens[start].Kind != SqlTokenKind.Word)
            {
                continue;
            }

            if (DataVerbs.Contains(Text(sql, tokens[start])))
            {
                return true;
            }

            var scans = IsWord(sql, tokens[start], "with")
                || IsWord(sql, tokens[start], "explain") && tokens.Skip(start).Take(end - start).Any(t => IsWord(sql, t, "analyze") || IsWord(sql, t, "analyse"));
            for (var i = start + 1; scans && i < end; i++)
            {
                if (tokens[i].Kind == SqlTokenKind.Word && DataVerbs.Contains(Text(sql, tokens[i]))
                    && !IsLockOrUpsertUpdate(sql, tokens, i))
                {
                    return true;
                }
            }
        }

        return false;
    }

    // The first token after the next top-level semicolon; -1 when there is none.
    private static int NextStatement(string sql, List<SqlToken> tokens, int from)
    {
        for (var i = from + 1; i < tokens.Count; i++)
        {
            if (tokens[i] is { Kind: SqlTokenKind.Other, Depth: 0 } && sql[tokens[i].Start] == ';')
            {
                return i + 1 < tokens.Count ? i + 1 : -1;
            }
        }

        return -1;
    }

    /// <summary>The table after the only FROM/JOIN/INTO/UPDATE/USING/TABLE (or after COPY), if it is a plain name.</summary>
    private static string? CollectionOf(string sql, List<SqlToken> tokens, int first)
    {
        int name;
        if (Text(sql, tokens[first]).Equals("copy", StringComparison.OrdinalIgnoreCase))
        {
            name = first + 1; // COPY orders (…) FROM STDIN: FROM names no table
        }
        else
        {
            var keywords = Enumerable.Range(0, tokens.Count).Where(i => IsTableKeyword(sql, tokens, i)).ToList();
            if (keywords.Count != 1)
            {
                return null;
            }

            name = SkipModifiers(sql, tokens, keywords[0] + 1);
        }

        var end = NameEnd(sql, tokens, name);
        if (end == name || FollowedByAnotherTable(sql, tokens, end))
        {
            return null;
        }

        return sql[tokens[name].Start..(tokens[end - 1].Start + tokens[end - 1].Length)];
    }

    // FOR UPDATE (a lock) and ON CONFLICT … DO UPDATE (an upsert) name no second table.
    private static bool IsTableKeyword(string sql, List<SqlToken> tokens, int i) =>
        tokens[i].Kind == SqlTokenKind.Word && TableKeywords.Contains(Text(sql, tokens[i]))
        && !IsLockOrUpsertUpdate(sql, tokens, i);

    // FOR [NO KEY] UPDATE (a lock) or ON CONFLICT … DO UPDATE (an upsert): an UPDATE that is no statement of its own.
    private static bool IsLockOrUpsertUpdate(string sql, List<SqlToken> tokens, int i) =>
        IsWord(sql, tokens[i], "update") && i > 0
        && (IsWord(sql, tokens[i - 1], "for") || IsWord(sql, tokens[i - 1], "do") || IsWord(sql, tokens[i - 1], "key"));

    // FROM ONLY t, CREATE TABLE IF NOT EXISTS t, DROP TABLE IF EXISTS t.
    private static int SkipModifiers(string sql, List<SqlToken> tokens, int i)
    {
        while (i < tokens.Count && (IsWord(sql, tokens[i], "only") || IsWord(sql, tokens[i], "if") || IsWord(sql, tokens[i], "not") || IsWord(sql, tokens[i], "exists")))
        {
            i++;
        }

        return i;
    }

    /// <summary>The token after a name (word or "quoted", optionally schema-qualified) starting at <paramref name="i"/>.</summary>
    private static int NameEnd(string sql, List<SqlToken> tokens, int i)
    {
        var end = i;
        while (end < tokens.Count && IsNamePart(sql, tokens[end]))
        {
            end++;
            if (end + 1 < tokens.Count && sql[tokens[end].Start] == '.' && tokens[end].Kind == SqlTokenKind.Other && IsNamePart(sql, tokens[end + 1]))
            {
                end++; // schema.table
                continue;
            }

            break;
        }

        return end;
    }

    // "FROM a, b" and "FROM a x, b y" list several tables.
    private static bool FollowedByAnotherTable(string sql, List<SqlToken> tokens, int i)
    {
        if (i < tokens.Count && tokens[i].Kind == SqlTokenKind.Word)
        {
            i += IsWord(sql, tokens[i], "as") ? 2 : 1; // an alias
        }

        return i < tokens.Count && tokens[i].Kind == SqlTokenKind.Other && sql[tokens[i].Start] == ',';
    }

    private static bool IsNamePart(string sql, SqlToken token) =>
        token.Kind == SqlTokenKind.Word || (token.Kind == SqlTokenKind.Other && sql[token.Start] == '"');

    private static bool IsWord(string sql, SqlToken token, string word) =>
        token.Kind == SqlTokenKind.Word && sql.AsSpan(token.Start, token.Length).Equals(word, StringComparison.OrdinalIgnoreCase);

    private static string Text(string sql, SqlToken token) => sql.Substring(token.Start, token.Length);
}

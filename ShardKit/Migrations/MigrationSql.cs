using ShardKit.Merging;

namespace ShardKit;

/// <summary>
/// Reads a non-transactional script: its statements (each sent alone, since PostgreSQL runs statements sent together as
/// one implicit transaction, which <c>CREATE INDEX CONCURRENTLY</c> refuses) and the indexes it builds concurrently.
/// </summary>
internal static class MigrationSql
{
    /// <summary>The statements of <paramref name="sql"/>, split at semicolons outside strings, comments and bodies.</summary>
    public static IReadOnlyList<string> Statements(string sql)
    {
        var statements = new List<string>();
        var start = 0;
        var hasTokens = false;
        foreach (var token in SqlLexer.Tokenize(sql))
        {
            if (token is { Kind: SqlTokenKind.Other, Length: 1, Depth: 0 } && sql[token.Start] == ';')
            {
                if (hasTokens)
                {
                    statements.Add(sql[start..token.Start].Trim());
                }

                (start, hasTokens) = (token.Start + 1, false);
            }
            else
            {
                hasTokens = true;
            }
        }

        if (hasTokens)
        {
            statements.Add(sql[start..].Trim());
        }

        return statements;
    }

    /// <summary>
    /// The names, as written (<c>orders_by_customer</c>, <c>app."Idx"</c>), of indexes that <paramref name="statement"/>
    /// creates with <c>CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name</c>; an unnamed index has none.
    /// </summary>
    public static string? ConcurrentIndexName(string statement)
    {
        var tokens = SqlLexer.Tokenize(statement);
        var i = 0;
        bool Next(string word)
        {
            if (i < tokens.Count && tokens[i].Kind == SqlTokenKind.Word
                && statement.AsSpan(tokens[i].Start, tokens[i].Length).Equals(word, StringComparison.OrdinalIgnoreCase))
            {
                i++;
                return true;
            }

            return false;
        }

        if (!Next("create"))
        {
            return null;
        }

        Next("unique");
        if (!Next("index") || !Next("concurrently"))
        {
            return null;
        }

        if (Next("if") && !(Next("not") && Next("exists")))
        {
            return null;
        }

        if (i >= tokens.Count || Next("on") || !IsName(statement, tokens[i]))
        {
            return null;
        }

        var first = tokens[i];
        var end = first.Start + first.Length;
        if (i + 2 < tokens.Count && statement[tokens[i + 1].Start] == '.' && IsName(statement, tokens[i + 2]))
        {
            end = tokens[i + 2].Start + tokens[i + 2].Length;
        }

        return statement[first.Start..end];
    }

    private static bool IsName(string sql, SqlToken token) =>
        token.Kind == SqlTokenKind.Word || (token.Kind == SqlTokenKind.Other && sql[token.Start] == '"');
}


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

        if (i >= tokens.Count || Next("on"))
        {
            return null;
        }

        var (schema, name) = QualifiedName(statement, tokens, ref i);
        if (name is null || !Next("on"))
        {
            return null;
        }

        // An index lives in its table's schema: qualify the index by it, so the lookup does not depend on the search path.
        Next("only");
        var (tableSchema, _) = QualifiedName(statement, tokens, ref i);
        return schema is not null ? schema + "." + name : tableSchema is not null ? tableSchema + "." + name : name;
    }

    /// <summary>Reads <c>name</c> or <c>schema.name</c> (each a word or a quoted identifier) at <paramref name="i"/>.</summary>
    private static (string? Schema, string? Name) QualifiedName(string sql, List<SqlToken> tokens, ref int i)
    {
        if (i >= tokens.Count || !IsName(sql, tokens[i]))
        {
            return (null, null);
        }

        var first = Text(sql, tokens[i++]);
        if (i + 1 < tokens.Count && tokens[i].Kind == SqlTokenKind.Other && sql[tokens[i].Start] == '.' && IsName(sql, tokens[i + 1]))
        {
            var second = Text(sql, tokens[i + 1]);
            i += 2;
            return (first, second);
        }

        return (null, first);
    }

    private static string Text(string sql, SqlToken token) => sql.Substring(token.Start, token.Length);

    private static bool IsName(string sql, SqlToken token) =>
        token.Kind == SqlTokenKind.Word || (token.Kind == SqlTokenKind.Other && sql[token.Start] == '"');
}

namespace ShardKit;

/// <summary>One token of a statement: a word (keyword or identifier), a parenthesis, or other punctuation.</summary>
internal readonly record struct SqlToken(SqlTokenKind Kind, int Start, int Length, int Depth);

/// <summary>What a <see cref="SqlToken"/> is; literals, quoted identifiers, parameters and comments never become words.</summary>
internal enum SqlTokenKind
{
    Word,
    Open,
    Close,
    Other,
}

/// <summary>
/// Splits PostgreSQL text into the tokens a shape check needs, and no more: words with their parenthesis depth.
/// Knows what hides keywords — '…' and E'…' strings, "…" identifiers, $$…$$ and $tag$…$tag$ bodies, -- and nested
/// /* */ comments, @Parameters — so <c>'order by'</c> or <c>"limit"</c> is never read as a clause.
/// </summary>
internal static class SqlLexer
{
    public static List<SqlToken> Tokenize(string sql)
    {
        var tokens = new List<SqlToken>();
        var depth = 0;
        var i = 0;
        while (i < sql.Length)
        {
            var c = sql[i];
            var next = i + 1 < sql.Length ? sql[i + 1] : '\0';
            if (char.IsWhiteSpace(c))
            {
                i++;
            }
            else if (c == '-' && next == '-')
            {
                i = LineEnd(sql, i);
            }
            else if (c == '/' && next == '*')
            {
                i = CommentEnd(sql, i);
            }
            else if (c == '\'')
            {
                i = QuotedEnd(sql, i, '\'', backslashEscapes: false);
            }
            else if (c == '"')
            {
                var end = QuotedEnd(sql, i, '"', backslashEscapes: false);
                tokens.Add(new(SqlTokenKind.Other, i, end - i, depth));
                i = end;
            }
            else if (c == '$' && DollarQuoteEnd(sql, i) is var body && body > i)
            {
                i = body;
            }
            else if ((c == '@' || c == '$') && (IsWordStart(next) || char.IsAsciiDigit(next)))
            {
                i = WordEnd(sql, i + 1); // a parameter (@Take, $1): its name is no keyword
            }
            else if (IsWordStart(c))
            {
                i = Word(sql, i, depth, tokens);
            }
            else if (char.IsAsciiDigit(c))
            {
                i = WordEnd(sql, i); // a number, 1e10 or 0x1F included
            }
            else if (c == '(')
            {
                tokens.Add(new(SqlTokenKind.Open, i++, 1, depth++));
            }
            else if (c == ')')
            {
                depth = Math.Max(0, depth - 1);
                tokens.Add(new(SqlTokenKind.Close, i++, 1, depth));
            }
            else
            {
                tokens.Add(new(SqlTokenKind.Other, i++, 1, depth));
            }
        }

        return tokens;
    }

    /// <summary>Reads a word, and the string it prefixes when it is E'…' (backslash escapes) or U&amp;'…'.</summary>
    private static int Word(string sql, int start, int depth, List<SqlToken> tokens)
    {
        var end = WordEnd(sql, start);
        var quote = end < sql.Length ? sql[end] : '\0';
        if (end - start == 1 && quote == '\'' && (sql[start] is 'e' or 'E'))
        {
            return QuotedEnd(sql, end, '\'', backslashEscapes: true);
        }

        if (end - start == 1 && (sql[start] is 'u' or 'U') && quote == '&' && end + 1 < sql.Length && sql[end + 1] is '\'' or '"')
        {
            var close = QuotedEnd(sql, end + 1, sql[end + 1], backslashEscapes: false);
            tokens.Add(new(SqlTokenKind.Other, start, close - start, depth));
            return close;
        }

        tokens.Add(new(SqlTokenKind.Word, start, end - start, depth));
        return end;
    }

    private static bool IsWordStart(char c) => char.IsLetter(c) || c == '_';

    private static bool IsWordPart(char c) => char.IsLetterOrDigit(c) || c is '_' or '$';

    private static int WordEnd(string sql, int i)
    {
        while (i < sql.Length && IsWordPart(sql[i]))
        {
            i++;
        }

        return i;
    }

    private static int LineEnd(string sql, int i)
    {
        var end = sql.IndexOf('\n', i);
        return end < 0 ? sql.Length : end + 1;
    }

    /// <summary>The end of a /* */ comment; PostgreSQL nests them.</summary>
    private static int CommentEnd(string sql, int i)
    {
        var nesting = 0;
        while (i < sql.Length - 1)
        {
            if (sql[i] == '/' && sql[i + 1] == '*')
            {
                (nesting, i) = (nesting + 1, i + 2);
            }
            else if (sql[i] == '*' && sql[i + 1] == '/')
            {
                (nesting, i) = (nesting - 1, i + 2);
                if (nesting == 0)
                {
                    return i;
                }
            }
            else
            {
                i++;
            }
        }

        return sql.Length;
    }

    /// <summary>The end of a quoted run starting at <paramref name="i"/>; a doubled quote stays inside.</summary>
    private static int QuotedEnd(string sql, int i, char quote, bool backslashEscapes)
    {
        i++;
        while (i < sql.Length)
        {
            var c = sql[i];
            if (backslashEscapes && c == '\\')
            {
                i += 2;
            }
            else if (c != quote)
            {
                i++;
            }
            else if (i + 1 < sql.Length && sql[i + 1] == quote)
            {
                i += 2;
            }
            else
            {
                return i + 1;
            }
        }

        return sql.Length;
    }

    /// <summary>The end of a $$…$$ or $tag$…$tag$ body starting at <paramref name="i"/>, or <paramref name="i"/> when none starts there.</summary>
    private static int DollarQuoteEnd(string sql, int i)
    {
        var tagEnd = i + 1;
        if (tagEnd < sql.Length && IsWordStart(sql[tagEnd]))
        {
            while (tagEnd < sql.Length && (IsWordPart(sql[tagEnd]) && sql[tagEnd] != '$'))
            {
                tagEnd++;
            }
        }

        if (tagEnd >= sql.Length || sql[tagEnd] != '$')
        {
            return i;
        }

        var tag = sql.AsSpan(i, tagEnd - i + 1);
        var close = sql.AsSpan(tagEnd + 1).IndexOf(tag, StringComparison.Ordinal);
        return close < 0 ? sql.Length : tagEnd + 1 + close + tag.Length;
    }
}

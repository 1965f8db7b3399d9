using System.Text;

namespace ShardKit;

/// <summary>
/// Rewrites Dapper's named placeholders (<c>@Name</c>, and <c>:Name</c> as Npgsql reads them) to PostgreSQL's
/// positional <c>$n</c> once per statement, so a pipelined batch sends its commands in Npgsql's raw mode instead of
/// having Npgsql parse the same text for every row. Quoted strings, quoted identifiers, comments, dollar quotes and
/// <c>::</c> casts are copied untouched, as PostgreSQL's lexer reads them.
/// </summary>
internal static class SqlPlaceholders
{
    /// <summary>
    /// The statement with every known placeholder replaced by <c>$n</c>; <paramref name="positionOf"/> gives the
    /// 1-based position of a name, or 0 to leave it as written. Null when the text holds more than one statement.
    /// </summary>
    public static string? ToPositional(string sql, Func<string, int> positionOf)
    {
        var text = new StringBuilder(sql.Length + 16);
        var i = 0;
        while (i < sql.Length)
        {
            var c = sql[i];
            var end = c switch
            {
                '\'' => QuotedEnd(sql, i, '\'', backslashEscapes: IsEscapeString(sql, i)),
                '"' => QuotedEnd(sql, i, '"', backslashEscapes: false),
                '-' when At(sql, i + 1) == '-' => LineCommentEnd(sql, i),
                '/' when At(sql, i + 1) == '*' => BlockCommentEnd(sql, i),
                '$' => DollarQuoteEnd(sql, i),
                ':' when At(sql, i + 1) == ':' => i + 2,
                _ => -1,
            };
            if (end > 0)
            {
                text.Append(sql, i, end - i);
                i = end;
            }
            else if (c is '@' or ':' && IsNameStart(At(sql, i + 1)) && (i == 0 || !IsNameChar(sql[i - 1])))
            {
                var nameEnd = i + 1;
                while (nameEnd < sql.Length && IsNameChar(sql[nameEnd]))
                {
                    nameEnd++;
                }

                var position = positionOf(sql[(i + 1)..nameEnd]);
                if (position > 0)
                {
                    text.Append('$').Append(position);
                }
                else
                {
                    text.Append(sql, i, nameEnd - i);
                }

                i = nameEnd;
            }
            else if (c == ';' && !sql.AsSpan(i + 1).Trim().Trim(';').IsEmpty)
            {
                return null;
            }
            else
            {
                text.Append(c);
                i++;
            }
        }

        return text.ToString();
    }

    private static char At(string sql, int i) => i < sql.Length ? sql[i] : '\0';

    private static bool IsNameStart(char c) => char.IsLetter(c) || c == '_';

    private static bool IsNameChar(char c) => char.IsLetterOrDigit(c) || c == '_';

    // E'…' strings (and only those, with standard_conforming_strings on) take backslash escapes.
    private static bool IsEscapeString(string sql, int quote) =>
        quote > 0 && sql[quote - 1] is 'E' or 'e' && (quote == 1 || !IsNameChar(sql[quote - 2]));

    private static int QuotedEnd(string sql, int start, char quote, bool backslashEscapes)
    {
        for (var i = start + 1; i < sql.Length; i++)
        {
            if (backslashEscapes && sql[i] == '\\')
            {
                i++;
            }
            else if (sql[i] == quote)
            {
                if (At(sql, i + 1) != quote)
                {
                    return i + 1;
                }

                i++;
            }
        }

        return sql.Length;
    }

    private static int LineCommentEnd(string sql, int start)
    {
        var newline = sql.IndexOf('\n', start);
        return newline < 0 ? sql.Length : newline + 1;
    }

    // PostgreSQL's block comments nest.
    private static int BlockCommentEnd(string sql, int start)
    {
        var depth = 0;
        for (var i = start; i < sql.Length - 1; i++)
        {
            if (sql[i] == '/' && sql[i + 1] == '*')
            {
                depth++;
                i++;
            }
            else if (sql[i] == '*' && sql[i + 1] == '/')
            {
                i++;
                if (--depth == 0)
                {
                    return i + 1;
                }
            }
        }

        return sql.Length;
    }

    // $$…$$ or $tag$…$tag$; a '$' inside an identifier or before a digit ($1) is not a quote.
    private static int DollarQuoteEnd(string sql, int start)
    {
        if (start > 0 && IsNameChar(sql[start - 1]))
        {
            return -1;
        }

        var tagEnd = start + 1;
        if (IsNameStart(At(sql, tagEnd)))
        {
            while (tagEnd < sql.Length && IsNameChar(sql[tagEnd]))
            {
                tagEnd++;
            }
        }

        if (At(sql, tagEnd) != '$')
        {
            return -1;
        }

        var tag = sql[start..(tagEnd + 1)];
        var close = sql.IndexOf(tag, tagEnd + 1, StringComparison.Ordinal);
        return close < 0 ? sql.Length : close + tag.Length;
    }
}

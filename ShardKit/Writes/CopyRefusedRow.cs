using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;

namespace ShardKit;

/// <summary>
/// The row a server refused during one COPY statement: PostgreSQL names it in the error's context as
/// <c>COPY table, line N</c> (the N-th row of that COPY, binary format included), followed by <c>, column c</c> when it
/// was reading that column's value; a NOT NULL violation names the column in <see cref="PostgresException.ColumnName"/>.
/// </summary>
/// <param name="Line">The row's one-based position in its COPY statement.</param>
/// <param name="Column">The column at fault, when the server named one.</param>
internal sealed partial record CopyRefusedRow(long Line, string? Column)
{
    /// <summary>
    /// The refused row of a data (SQLSTATE class 22) or constraint (class 23) error that names its COPY line; null for
    /// any other error, which is the shard's, not a row's.
    /// </summary>
    public static CopyRefusedRow? From(Exception error)
    {
        if (error is not PostgresException { Where: { } where } pg || !(pg.SqlState.StartsWith("22", StringComparison.Ordinal)
            || pg.SqlState.StartsWith("23", StringComparison.Ordinal)))
        {
            return null;
        }

        // The COPY's frame is the outermost one; a function called by a constraint adds its own frames before it.
        foreach (var frame in Enumerable.Reverse(where.Split('\n')))
        {
            var match = CopyContext().Match(frame.Trim());
            if (match.Success && long.TryParse(match.Groups["line"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out var line) && line > 0)
            {
                var column = match.Groups["column"] is { Success: true } c ? c.Value : null;
                return new CopyRefusedRow(line, pg.ColumnName ?? column);
            }
        }

        return null;
    }

    // "COPY orders, line 12, column total" in English; translations keep the shape "COPY <table>, <word> <n>[, <word> <column>]".
    [GeneratedRegex(@"^COPY .+?, \S+ (?<line>\d+)(?:, \S+ (?<column>.+))?$", RegexOptions.CultureInvariant)]
    private static partial Regex CopyContext();
}

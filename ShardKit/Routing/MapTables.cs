namespace ShardKit;

/// <summary>
/// The tables whose rows move with their buckets and the key column of each, as the catalog lists them (seeded with
/// the map). While a move is under way, a fan-out of untyped rows read from one of these tables alone keeps from each
/// shard the rows whose key column names a bucket the shard owns, as typed rows are kept by their <c>[ShardKey]</c>.
/// </summary>
internal sealed class MapTables
{
    public static readonly MapTables None = new([]);

    // Table name as written in the catalog (lower case; with its schema when it was given one) → key column.
    private readonly Dictionary<string, string> _keyColumns;

    private MapTables(Dictionary<string, string> keyColumns) => _keyColumns = keyColumns;

    /// <summary>From the catalog's <c>table:key_column</c> entries.</summary>
    public static MapTables Parse(IReadOnlyList<string>? entries)
    {
        if (entries is not { Count: > 0 })
        {
            return None;
        }

        var keyColumns = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var entry in entries)
        {
            var colon = entry.LastIndexOf(':');
            if (colon > 0 && colon < entry.Length - 1)
            {
                keyColumns[entry[..colon]] = entry[(colon + 1)..];
            }
        }

        return new MapTables(keyColumns);
    }

    /// <summary>
    /// The key column of the one table <paramref name="sql"/> reads, when that table moves with its buckets: a single
    /// SELECT whose only FROM names it, with no join, subquery or second statement (the lexer's
    /// <see cref="CommandSummary.Collection"/>). Null for anything else: its rows cannot be told apart by key.
    /// </summary>
    public string? KeyColumnOf(string? sql)
    {
        if (_keyColumns.Count == 0 || string.IsNullOrEmpty(sql) || sql.Contains(';', StringComparison.Ordinal) && !IsOneStatement(sql))
        {
            return null;
        }

        var summary = CommandSummary.Of(sql);
        if (summary is not { Operation: "SELECT", Collection: { } table } || summary.ChangesData)
        {
            return null;
        }

        if (table.Contains('"', StringComparison.Ordinal))
        {
            // A quoted name keeps its case; the catalog's names are plain (lower case) identifiers.
            table = table.Replace("\"", "", StringComparison.Ordinal);
            if (!table.Equals(table.ToLowerInvariant(), StringComparison.Ordinal))
            {
                return null;
            }
        }

        if (_keyColumns.TryGetValue(table, out var column))
        {
            return column;
        }

        // public.orders read as orders, or orders listed as public.orders: the same table on the app's search path.
        var dot = table.LastIndexOf('.');
        return dot < 0 ? _keyColumns.GetValueOrDefault("public." + table)
            : table[..dot].Equals("public", StringComparison.OrdinalIgnoreCase) ? _keyColumns.GetValueOrDefault(table[(dot + 1)..])
            : null;
    }

    // One statement, perhaps ended by `;`: every `;` outside strings, quoted names and comments is at the end.
    private static bool IsOneStatement(string sql)
    {
        var ended = false;
        foreach (var token in SqlLexer.Tokenize(sql))
        {
            var isEnd = token.Kind == SqlTokenKind.Other && token.Length == 1 && sql[token.Start] == ';';
            if (ended && !isEnd)
            {
                return false;
            }

            ended |= isEnd;
        }

        return true;
    }
}

using Npgsql;

namespace ShardKit;

/// <summary>Reads a table's columns and their types, so values are written as the columns' types and checked on the client.</summary>
internal static class TableCatalog
{
    private const string Sql = """
        select a.attname, t.typname, n.nspname
        from pg_attribute a
        join pg_type d on d.oid = a.atttypid
        join pg_type t on t.oid = case when d.typtype = 'd' then d.typbasetype else d.oid end
        join pg_namespace n on n.oid = t.typnamespace
        where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """;

    /// <summary>The columns of <paramref name="table"/> (a name as SQL would spell it, optionally schema-qualified and quoted).</summary>
    public static async Task<IReadOnlyList<TableColumn>> ReadAsync(NpgsqlConnection connection, string table, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(Sql, connection);
        await using var commandScope = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = table });
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using var readerScope = reader.ConfigureAwait(false);
        var columns = new List<TableColumn>();
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            var type = reader.GetString(1);
            columns.Add(new TableColumn(reader.GetString(0), type, reader.GetString(2) + "." + type));
        }

        return columns;
    }
}

using Npgsql;

namespace ShardKit;

/// <summary>Reads what a bucket move needs to know about a table from the source shard's catalog.</summary>
internal static class MovedTables
{
    private const string TableSql = """
        select n.nspname, c.relname, c.oid::bigint
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.oid = to_regclass($1)
        """;

    private const string ColumnsSql = """
        select a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::regtype::text
        from pg_attribute a
        where a.attrelid = $1::oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
        order by a.attnum
        """;

    // The primary key when there is one, else the replica identity index: the columns pgoutput sends as the old key.
    private const string KeySql = """
        select a.attname
        from (select i.indkey from pg_index i where i.indrelid = $1::oid and (i.indisprimary or i.indisreplident)
              order by i.indisprimary desc limit 1) k
        cross join lateral unnest(k.indkey) with ordinality u(attnum, ord)
        join pg_attribute a on a.attrelid = $1::oid and a.attnum = u.attnum
        order by u.ord
        """;

    /// <summary>
    /// Describes <paramref name="table"/> (a name as SQL spells it, optionally schema-qualified) sharded by
    /// <paramref name="keyColumn"/>. Needs only to see the catalog (any role).
    /// </summary>
    /// <exception cref="BucketMoveException">
    /// The table does not exist, has no primary key or replica identity index, has no such column, or the key's type
    /// has no hash placement (smallint, integer, bigint, text, varchar and uuid have).
    /// </exception>
    public static async Task<MovedTable> DescribeAsync(NpgsqlConnection connection, string table, string keyColumn, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(table);
        ArgumentException.ThrowIfNullOrWhiteSpace(keyColumn);

        var (schema, name, oid) = await TableAsync(connection, table, ct).ConfigureAwait(false);
        var columns = await ListAsync(connection, ColumnsSql, oid, ct).ConfigureAwait(false);
        var key = (await ListAsync(connection, KeySql, oid, ct).ConfigureAwait(false)).Select(r => r[0]).ToList();
        var qualified = MovedTable.Quote(schema) + "." + MovedTable.Quote(name);
        if (key.Count == 0)
        {
            throw new BucketMoveException(
                $"Table {qualified} has no primary key or replica identity index, so moved rows cannot be matched on the target; " +
                $"add one (ALTER TABLE {qualified} ADD PRIMARY KEY (...)) before moving its buckets.");
        }

        var keyRow = columns.Find(c => c[0] == keyColumn) ?? throw new BucketMoveException(
            $"Table {qualified} has no column {MovedTable.Quote(keyColumn)} to shard by; name the shard key column as the catalog spells it.");
        var kind = BucketSql.KindOf(keyRow[2]) ?? throw new BucketMoveException(
            $"Table {qualified} is sharded by {MovedTable.Quote(keyColumn)} of type {keyRow[2]}, which has no hash placement; " +
            "hash keys are smallint, integer, bigint, text, varchar or uuid.");

        return new MovedTable(schema, name, keyColumn, kind, key, columns.Select(c => c[0]).ToList(), columns.Select(c => c[1]).ToList());
    }

    private static async Task<(string Schema, string Name, long Oid)> TableAsync(NpgsqlConnection connection, string table, CancellationToken ct)
    {
        var command = new NpgsqlCommand(TableSql, connection) { Parameters = { new() { Value = table } } };
        await using var commandLifetime = command.ConfigureAwait(false);
        var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await using var readerLifetime = reader.ConfigureAwait(false);
        if (!await reader.ReadAsync(ct).ConfigureAwait(false))
        {
            throw new BucketMoveException($"Table {table} does not exist on the shard; create it (migrate the shard) or fix the name.");
        }

        return (reader.GetString(0), reader.GetString(1), reader.GetInt64(2));
    }

    private static async Task<List<string[]>> ListAsync(NpgsqlConnection connection, string sql, long oid, CancellationToken ct)
    {
        var command = new NpgsqlCommand(sql, connection) { Parameters = { new() { Value = oid } } };
        await using var commandLifetime = command.ConfigureAwait(false);
        var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await using var readerLifetime = reader.ConfigureAwait(false);
        var rows = new List<string[]>();
        while (await reader.ReadAsync(ct).ConfigureAwait(false))
        {
            var row = new string[reader.FieldCount];
            for (var i = 0; i < row.Length; i++)
            {
                row[i] = reader.GetString(i);
            }

            rows.Add(row);
        }

        return rows;
    }
}

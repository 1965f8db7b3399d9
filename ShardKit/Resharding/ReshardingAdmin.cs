using Npgsql;

namespace ShardKit;

/// <summary>
/// The catalog and fence work around moves: seeding the stored map and every shard's fence from the current map,
/// fencing a new shard, reading the tables and moves the catalog records, and the placement audit.
/// </summary>
internal sealed class ReshardingAdmin(ShardSet shards)
{
    public ShardSet Shards { get; } = shards;

    public int CatalogIndex => Shards.Settings.StoredMap is { } stored
        ? Shards.Map.IndexOf(stored.CatalogShard)
        : throw new InvalidOperationException(
            "This data source has no stored map: build it with UseStoredMap(catalogShard) (or ShardKit:StoredMap) to move buckets.");

    public NpgsqlDataSource Catalog => Shards.DataSourceAt(CatalogIndex);

    /// <summary>
    /// Writes the current map to the catalog (when it holds none yet) and installs each shard's fence for
    /// <paramref name="tables"/>: ownership rows for every bucket and the triggers. Safe to run again: a stored map and
    /// existing ownership rows are kept, tables are added, triggers replaced.
    /// </summary>
    public async Task<long> SeedAsync(IReadOnlyList<ShardedTable> tables, CancellationToken cancellationToken)
    {
        foreach (var table in tables)
        {
            if (!SqlNames.IsValid(table.Table) || !SqlNames.IsValidColumn(table.KeyColumn))
            {
                throw new ArgumentException($"'{table.Table}'.'{table.KeyColumn}' is not a plain table and column name; use letters, " +
                    "digits and _ (a table may be schema.table).", nameof(tables));
            }
        }

        // Plain names are folded to lower case, as PostgreSQL folds them: ID is the column id.
        tables = tables.Select(t => new ShardedTable(t.Table.ToLowerInvariant(), t.KeyColumn.ToLowerInvariant())).ToArray();

        var map = Shards.Map;
        var buckets = map.Buckets ?? throw new InvalidOperationException("Moving buckets needs hash sharding.");
        long epoch;
        var catalog = await Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (catalog.ConfigureAwait(false))
        {
            var transaction = await catalog.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using var _ = transaction.ConfigureAwait(false);
            await ExecuteAsync(catalog, $"select pg_advisory_xact_lock({LockKey}); {StoredMapCatalog.Schema}", cancellationToken).ConfigureAwait(false);
            var stored = await StoredMapCatalog.ReadAsync(catalog, async: true, cancellationToken).ConfigureAwait(false);
            if (stored is null)
            {
                var seed = new NpgsqlCommand("""
                    insert into shardkit.map (epoch, bucket_count) values (1, @count);
                    insert into shardkit.map_bucket (bucket, shard, epoch) select b - 1, s, 1 from unnest(@owners::text[]) with ordinality as u(s, b);
                    """, catalog);
                await using (seed.ConfigureAwait(false))
                {
                    seed.Parameters.Add(new NpgsqlParameter<int>("count", buckets.Count));
                    seed.Parameters.Add(new NpgsqlParameter<string[]> { ParameterName = "owners", TypedValue = Enumerable.Range(0, buckets.Count).Select(b => map.ShardNames[buckets.ShardOfBucket(b)]).ToArray() });
                    await seed.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }

                stored = new CatalogMap(1, buckets.Count, Enumerable.Range(0, buckets.Count).Select(b => map.ShardNames[buckets.ShardOfBucket(b)]).ToArray());
            }

            tables = await OneSpellingAsync(catalog, tables, cancellationToken).ConfigureAwait(false);
            foreach (var table in tables)
            {
                var add = new NpgsqlCommand(
                    "insert into shardkit.map_table (table_name, key_column) values ($1, $2) on conflict (table_name) do update set key_column = excluded.key_column",
                    catalog);
                await using (add.ConfigureAwait(false))
                {
                    add.Parameters.Add(new NpgsqlParameter<string> { TypedValue = table.Table });
                    add.Parameters.Add(new NpgsqlParameter<string> { TypedValue = table.KeyColumn });
                    await add.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }
            }

            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            epoch = stored.Epoch;
            for (var shard = 0; shard < Shards.Count; shard++)
            {
                var owned = Enumerable.Range(0, stored.Owners.Length).Where(b => stored.Owners[b] == map.ShardNames[shard]).ToArray();
                await FenceAsync(shard, owned, stored.BucketCount, tables, cancellationToken).ConfigureAwait(false);
            }

            await ExecuteAsync(catalog, $"select pg_notify('{StoredMapCatalog.Channel}', '{epoch}')", cancellationToken).ConfigureAwait(false);
        }

        if (Shards.Follower is { } follower)
        {
            await follower.RefreshAsync(cancellationToken).ConfigureAwait(false);
        }

        return epoch;
    }

    /// <summary>
    /// The tables with one spelling each: a table the catalog already lists under another spelling (orders and
    /// public.orders name the same relation on the catalog's server) keeps that one, and one listed twice in
    /// <paramref name="tables"/> is kept once; the same table with two key columns is refused. A table the catalog's server
    /// does not hold is taken as spelled.
    /// </summary>
    private static async Task<ShardedTable[]> OneSpellingAsync(NpgsqlConnection catalog, IReadOnlyList<ShardedTable> tables,
        CancellationToken cancellationToken)
    {
        var kept = new List<ShardedTable>();
        var byRelation = new Dictionary<uint, ShardedTable>();
        foreach (var table in tables)
        {
            var find = new NpgsqlCommand(
                "select to_regclass($1)::oid, (select m.table_name from shardkit.map_table m where m.table_name <> $1 " +
                "and to_regclass(m.table_name) = to_regclass($1) order by m.table_name limit 1)", catalog);
            await using var _ = find.ConfigureAwait(false);
            find.Parameters.Add(new NpgsqlParameter<string> { TypedValue = table.Table });
            var reader = await find.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            uint? relation;
            string? listed;
            await using (reader.ConfigureAwait(false))
            {
                await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                relation = reader.IsDBNull(0) ? null : reader.GetFieldValue<uint>(0);
                listed = reader.IsDBNull(1) ? null : reader.GetString(1);
            }

            var spelled = table with { Table = listed ?? table.Table };
            if (relation is { } oid && byRelation.TryGetValue(oid, out var first))
            {
                if (first.KeyColumn != spelled.KeyColumn)
                {
                    throw new ArgumentException($"Table {table.Table} is listed twice with two key columns ({first.KeyColumn} and " +
                        $"{spelled.KeyColumn}); a table has one shard key column. Nothing was seeded.", nameof(tables));
                }

                continue;
            }

            if (relation is { } found)
            {
                byRelation[found] = spelled;
            }

            kept.Add(spelled);
        }

        return [.. kept];
    }

    /// <summary>The tables the catalog moves with their buckets.</summary>
    public async Task<IReadOnlyList<ShardedTable>> TablesAsync(CancellationToken cancellationToken)
    {
        var connection = await Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var command = new NpgsqlCommand("select table_name, key_column from shardkit.map_table order by table_name", connection);
        await using var __ = command.ConfigureAwait(false);
        var tables = new List<ShardedTable>();
        var reader = await ExecuteReaderAsync(command, cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                tables.Add(new ShardedTable(reader.GetString(0), reader.GetString(1)));
            }
        }

        return tables;
    }

    /// <summary>
    /// Installs <paramref name="shard"/>'s fence: ownership rows (owning <paramref name="owned"/>, not the other buckets;
    /// rows already there are kept) and the triggers on each table.
    /// </summary>
    public async Task FenceAsync(int shard, IReadOnlyCollection<int> owned, int bucketCount, IReadOnlyList<ShardedTable> tables,
        CancellationToken cancellationToken)
    {
        var connection = await Shards.DataSourceAt(shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await using var __ = transaction.ConfigureAwait(false);
        try
        {
            await ExecuteAsync(connection, $"select pg_advisory_xact_lock({LockKey}); {FenceSql.Functions}", cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.LockNotAvailable)
        {
            throw new ShardConfigurationException($"The fence on shard '{Shards.NameOf(shard)}' needs its new column shardkit.bucket_owner.moved_to, " +
                $"and adding it did not get the table's lock within {FenceSql.UpgradeLockTimeoutMs} ms (a long or prepared transaction holds bucket " +
                "rows; see pg_prepared_xacts and pg_locks). Resolve it, then seed again.", e);
        }
        var rows = new NpgsqlCommand("""
            insert into shardkit.bucket_owner (bucket, owned, epoch)
            select b, b = any($1), 1 from generate_series(0, $2 - 1) as b
            on conflict (bucket) do nothing
            """, connection);
        await using (rows.ConfigureAwait(false))
        {
            rows.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = owned.ToArray() });
            rows.Parameters.Add(new NpgsqlParameter<int> { TypedValue = bucketCount });
            await rows.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        foreach (var table in tables)
        {
            var type = await KeyTypeAsync(connection, shard, table, cancellationToken).ConfigureAwait(false);
            await ExecuteAsync(connection, FenceSql.Triggers(table.Table, table.KeyColumn, type, bucketCount), cancellationToken).ConfigureAwait(false);
        }

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Counts, on every shard and table, the rows whose bucket the shard does not own (by its own fence): 0 everywhere
    /// when every row is where the map says. Rows of a move in progress count where they are copies.
    /// </summary>
    public async Task<IReadOnlyList<MisplacedRows>> AuditAsync(CancellationToken cancellationToken)
    {
        var tables = await TablesAsync(cancellationToken).ConfigureAwait(false);
        var bucketCount = Shards.Map.Buckets?.Count ?? 0;
        var results = new List<MisplacedRows>();
        for (var shard = 0; shard < Shards.Count; shard++)
        {
            var connection = await Shards.DataSourceAt(shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await using var _ = connection.ConfigureAwait(false);
            foreach (var table in tables)
            {
                var type = await KeyTypeAsync(connection, shard, table, cancellationToken).ConfigureAwait(false);
                var bucket = FenceSql.BucketOf(type, "t." + table.KeyColumn, bucketCount);
                var command = new NpgsqlCommand(
                    $"select count(*) from {table.Table} t where not exists (select 1 from shardkit.bucket_owner o where o.bucket = {bucket} and o.owned)",
                    connection);
                await using (command.ConfigureAwait(false))
                {
                    var rows = (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
                    results.Add(new MisplacedRows(Shards.NameOf(shard), table.Table, rows));
                }
            }
        }

        return results;
    }

    /// <summary>The key column's type as <c>regtype</c> prints it, checked hashable.</summary>
    public async Task<string> KeyTypeAsync(NpgsqlConnection connection, int shard, ShardedTable table, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(null, connection);
        await using var _ = command.ConfigureAwait(false);
        var type = await BucketSql.ColumnTypeAsync(command, table.Table, table.KeyColumn, cancellationToken).ConfigureAwait(false)
            ?? throw new ShardConfigurationException(
                $"Shard '{Shards.NameOf(shard)}' has no column {table.KeyColumn} in table {table.Table}; create the table on every shard first.");
        return BucketSql.KindOf(type) is null
            ? throw new ShardConfigurationException(
                $"Column {table.Table}.{table.KeyColumn} is {type}; buckets are computed from smallint, integer, bigint, text, varchar and uuid keys.")
            : type;
    }

    /// <summary>Runs a catalog query; a catalog that was never seeded is a <see cref="ShardMoveException"/> saying so.</summary>
    public static async Task<NpgsqlDataReader> ExecuteReaderAsync(NpgsqlCommand command, CancellationToken cancellationToken)
    {
        try
        {
            return await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.InvalidSchemaName)
        {
            throw NotSeeded(e);
        }
    }

    public static ShardMoveException NotSeeded(Exception? cause = null) => new(null,
        "The catalog holds no map yet: seed it first (ShardResharding.SeedAsync or `shardkit map seed --table TABLE:KEY_COLUMN`).", cause);

    public static async Task ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(sql, connection);
        await using var _ = command.ConfigureAwait(false);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A SQL string literal of <paramref name="text"/> (Npgsql requires <c>standard_conforming_strings</c> on).</summary>
    public static string Literal(string text) => "'" + text.Replace("'", "''", StringComparison.Ordinal) + "'";

    // Seeding and fencing take turns (concurrent "create or replace" of one function fails).
    internal const long LockKey = 0x5348_4B52_4553_4844; // "SHKRESHD"
}

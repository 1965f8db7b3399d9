using Npgsql;

namespace ShardKit;

/// <summary>
/// Installs database-side id generation on every shard, so an insert that omits the id still gets a ShardKit id:
/// <c>shardkit_next_id(bucket int)</c> (a sequence and the server clock, in the spirit of Instagram's scheme without
/// its sign-bit overflow), <c>shardkit_bucket(hash int, buckets int)</c>, and per table a trigger that computes the
/// bucket from the shard-key column exactly as ShardKit does. Everything is idempotent (<c>create or replace</c>).
/// </summary>
/// <remarks>
/// Database ids set bit 9 (<see cref="ShardIdSource.Database"/>), so they never meet application ids. Each shard's
/// sequence gives 512 ids per millisecond; two database ids of one bucket could only repeat if one shard made 512
/// ids in a single millisecond, its clock stepped back while it kept making ids for that bucket, or two shards made
/// ids for one bucket at once (only possible while a bucket moves between shards). Functions and the sequence go
/// into the first schema of the connection's <c>search_path</c>.
/// </remarks>
public static class ShardIdSql
{
    /// <summary>Creates (or replaces) the id sequence and functions on every shard.</summary>
    public static async Task InstallAsync(ShardedDataSource dataSource, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var shards = dataSource.Shards; // everything below works on the shard set
        for (var shard = 0; shard < shards.Count; shard++)
        {
            await RunLockedAsync(shards.DataSourceAt(shard), ShardIdSqlText.Functions, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Installs the id functions and a <c>before insert</c> trigger on <paramref name="table"/> on every shard: a row
    /// inserted with a null <paramref name="idColumn"/> gets <c>shardkit_next_id</c> of its bucket. With hash sharding
    /// the bucket is computed from <paramref name="keyColumn"/> (smallint, integer, bigint, text, varchar or uuid) for
    /// the map's bucket count, so install again after changing it; with other strategies it is the shard's index.
    /// </summary>
    public static async Task InstallIdTriggerAsync(ShardedDataSource dataSource, string table, string idColumn, string keyColumn,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var shards = dataSource.Shards; // everything below works on the shard set
        ThrowIfNotPlain(table, nameof(table), SqlNames.IsValid(table));
        ThrowIfNotPlain(idColumn, nameof(idColumn), SqlNames.IsValidColumn(idColumn));
        ThrowIfNotPlain(keyColumn, nameof(keyColumn), SqlNames.IsValidColumn(keyColumn));

        await InstallAsync(dataSource, cancellationToken).ConfigureAwait(false);
        var function = table + "_shardkit_id";
        for (var shard = 0; shard < shards.Count; shard++)
        {
            var source = shards.DataSourceAt(shard);
            var bucket = shards.Map.Buckets is { } buckets
                ? $"shardkit_bucket({await KeyHashAsync(source, shards.Map.ShardNames[shard], table, keyColumn, cancellationToken).ConfigureAwait(false)}, {buckets.Count})"
                : shard.ToString(System.Globalization.CultureInfo.InvariantCulture);
            await RunLockedAsync(source, ShardIdSqlText.Trigger(table, function, idColumn, keyColumn, bucket), cancellationToken)
                .ConfigureAwait(false);
        }
    }

    private static async Task<string> KeyHashAsync(NpgsqlDataSource source, string shard, string table, string column,
        CancellationToken cancellationToken)
    {
        var command = source.CreateCommand();
        await using var _ = command.ConfigureAwait(false);
        var type = await BucketSql.ColumnTypeAsync(command, table, column, cancellationToken).ConfigureAwait(false)
            ?? throw new ShardConfigurationException(
                $"Shard '{shard}' has no column {column} in table {table}; create the table on every shard before installing its id trigger.");
        return BucketSql.HashOf(type, "new." + column) ?? throw new ShardConfigurationException(
            $"Column {table}.{column} is {type}; ShardKit hashes smallint, integer, bigint, text, varchar and uuid shard keys. " +
            "Change the column type, or generate ids in the application with ShardIdGenerator.");
    }

    private static async Task RunLockedAsync(NpgsqlDataSource source, string sql, CancellationToken cancellationToken)
    {
        // Concurrent "create or replace" of one function fails ("tuple concurrently updated"): take turns.
        var connection = await source.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await using var __ = transaction.ConfigureAwait(false);
        var command = new NpgsqlCommand($"select pg_advisory_xact_lock({WorkerLeaseTable.InstallLockKey});\n{sql}", connection, transaction);
        await using var ___ = command.ConfigureAwait(false);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    private static void ThrowIfNotPlain(string? name, string parameter, bool valid)
    {
        if (!valid)
        {
            throw new ShardConfigurationException(
                $"{parameter} '{name}' is not a plain identifier; use letters, digits and _ (a table may be schema.table).");
        }
    }
}

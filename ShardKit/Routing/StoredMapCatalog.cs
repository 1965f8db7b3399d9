using Npgsql;

namespace ShardKit;

/// <summary>
/// The stored bucket map as the catalog shard keeps it (schema <c>shardkit</c>): one row with the epoch and bucket
/// count, one row per bucket naming its shard. Written only by <c>ShardResharding</c> (seed and moves); read here.
/// </summary>
internal static class StoredMapCatalog
{
    /// <summary>The channel a switch notifies, with the new epoch as payload.</summary>
    public const string Channel = "shardkit_map";

    public const string Schema = """
        create schema if not exists shardkit;
        create table if not exists shardkit.map (
            id int primary key default 1 check (id = 1),
            epoch bigint not null,
            bucket_count int not null,
            updated timestamptz not null default now());
        create table if not exists shardkit.map_bucket (
            bucket int primary key,
            shard text not null,
            epoch bigint not null);
        create table if not exists shardkit.map_table (
            table_name text primary key,
            key_column text not null);
        create table if not exists shardkit.move (
            id text primary key,
            buckets int[] not null,
            source text not null,
            target text not null,
            state text not null,
            rows_copied bigint not null default 0,
            pause_ms double precision,
            error text,
            started timestamptz not null default now(),
            updated timestamptz not null default now());
        create table if not exists shardkit.move_chunk (
            move_id text not null,
            table_name text not null,
            bucket int not null,
            rows bigint not null,
            primary key (move_id, table_name, bucket));
        """;

    private const string ReadSql = """
        select m.epoch, m.bucket_count, array_agg(b.shard order by b.bucket),
            array(select distinct b from shardkit.move mv cross join unnest(mv.buckets) as b
                  where mv.state not in ('Done', 'Cancelled') order by b),
            array(select t.table_name || ':' || t.key_column from shardkit.map_table t order by t.table_name)
        from shardkit.map m cross join shardkit.map_bucket b
        group by m.epoch, m.bucket_count
        """;

    /// <summary>
    /// Reads the stored map, or null when the catalog was never seeded. Owners are shard names, one per bucket.
    /// </summary>
    public static async ValueTask<CatalogMap?> ReadAsync(NpgsqlConnection connection, bool async, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(ReadSql, connection);
        await using var _ = command.ConfigureAwait(false);
        try
        {
            var reader = async ? await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false) : command.ExecuteReader();
            await using var __ = reader.ConfigureAwait(false);
            if (!(async ? await reader.ReadAsync(cancellationToken).ConfigureAwait(false) : reader.Read()))
            {
                return null;
            }

            return new CatalogMap(reader.GetInt64(0), reader.GetInt32(1), reader.GetFieldValue<string[]>(2), reader.GetFieldValue<int[]>(3),
                reader.GetFieldValue<string[]>(4));
        }
        catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.InvalidSchemaName)
        {
            return null; // not seeded yet
        }
    }

    /// <summary>
    /// The map <paramref name="stored"/> describes over the shards of <paramref name="current"/>, or the problem that
    /// keeps it from being used (another bucket count, a shard this data source does not know).
    /// </summary>
    public static ShardMap Apply(ShardMap current, CatalogMap stored, out string? problem)
    {
        problem = null;
        if (current.Buckets is not { } buckets)
        {
            problem = "the data source does not use hash sharding";
            return current;
        }

        if (stored.BucketCount != buckets.Count || stored.Owners.Length != stored.BucketCount)
        {
            problem = $"the stored map has {stored.BucketCount} buckets ({stored.Owners.Length} placed) but the data source " +
                      $"is configured with {buckets.Count}; set Buckets to {stored.BucketCount}";
            return current;
        }

        var owners = new int[stored.Owners.Length];
        for (var b = 0; b < owners.Length; b++)
        {
            if (!current.Contains(stored.Owners[b]))
            {
                problem = $"the stored map places bucket {b} on shard '{stored.Owners[b]}', which this data source does not list; " +
                          "add it to the configured shards";
                return current;
            }

            owners[b] = current.IndexOf(stored.Owners[b]);
        }

        return current.WithOwners(owners, stored.Epoch, stored.Moving ?? [], MapTables.Parse(stored.Tables));
    }
}

/// <summary>
/// The stored map as read: its epoch, bucket count, the owning shard's name per bucket, the buckets of the moves
/// under way (their rows may sit on two shards: the owner's, and a copy on the other), and the tables whose rows move
/// with their buckets (<c>table:key_column</c>).
/// </summary>
internal sealed record CatalogMap(long Epoch, int BucketCount, string[] Owners, int[]? Moving = null, string[]? Tables = null);

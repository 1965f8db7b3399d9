using System.Globalization;

namespace ShardKit;

/// <summary>The SQL ShardKit installs on each shard for database-made ids.</summary>
internal static class ShardIdSqlText
{
    /// <summary>
    /// <c>shardkit_bucket(hash, buckets)</c> cuts the int32 hash space exactly as <c>BucketMath.BucketOf</c> does;
    /// <c>shardkit_next_id(bucket)</c> stamps the server clock, the bucket, source bit 1 and a 9-bit sequence, and
    /// fails instead of overflowing into the sign bit.
    /// </summary>
    public static readonly string Functions = string.Create(CultureInfo.InvariantCulture, $$"""
        create sequence if not exists shardkit_id_seq as bigint;

        create or replace function shardkit_bucket(hash int, buckets int) returns int
        language sql immutable strict parallel safe
        as $$ select (((hash::bigint + 2147483648) * buckets) >> 32)::int $$;

        create or replace function shardkit_next_id(bucket int) returns bigint
        language plpgsql volatile
        as $$
        declare
            ms bigint := floor(extract(epoch from clock_timestamp()) * 1000)::bigint - {{ShardId.EpochUnixMilliseconds}};
            seq bigint := nextval('shardkit_id_seq') % {{1 << ShardId.DatabaseSequenceBits}};
        begin
            if bucket is null or bucket < 0 or bucket > {{ShardId.BucketMask}} then
                raise exception 'shardkit_next_id: bucket % is outside 0..{{ShardId.BucketMask}}', bucket
                    using errcode = '22003', hint = 'Pass shardkit_bucket(hash of the shard key, bucket count), as ShardKit computes it.';
            end if;
            if ms < 0 or ms > {{ShardId.MaxTimestamp}} then
                raise exception 'shardkit_next_id: the server clock reads %, outside the id range 2025-01-01 to 2094-09-07', clock_timestamp()
                    using errcode = '22008';
            end if;
            return (ms << {{ShardId.TimestampShift}}) | (bucket::bigint << {{ShardId.BucketShift}}) | {{1 << ShardId.SourceShift}} | seq;
        end
        $$;
        """);

    /// <summary>A per-table trigger that fills a null id column from <paramref name="bucketExpression"/>.</summary>
    public static string Trigger(string table, string function, string idColumn, string keyColumn, string bucketExpression) => $$"""
        create or replace function {{function}}() returns trigger
        language plpgsql
        as $$
        begin
            if new.{{idColumn}} is null then
                if new.{{keyColumn}} is null then
                    raise exception '{{table}}.{{keyColumn}} is null: a ShardKit id needs the shard key to choose its bucket'
                        using errcode = '23502';
                end if;
                new.{{idColumn}} := shardkit_next_id({{bucketExpression}});
            end if;
            return new;
        end
        $$;
        drop trigger if exists shardkit_id on {{table}};
        create trigger shardkit_id before insert on {{table}} for each row execute function {{function}}();
        """;
}

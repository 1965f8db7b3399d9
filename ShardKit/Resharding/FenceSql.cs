namespace ShardKit;

/// <summary>
/// The ownership fence every shard keeps for itself: <c>shardkit.bucket_owner</c> (bucket, owned, epoch, and where a
/// bucket it gave up went) and, per
/// sharded table, statement-level triggers that lock the touched buckets' rows <c>for share</c> and refuse the statement
/// (SQLSTATE <c>SK001</c>, <see cref="ShardBucketMovedException"/>, naming where the bucket went when the shard knows)
/// when the shard does not own one of them. The check
/// runs inside the write itself, so it costs no round trip and also stops writers that bypass ShardKit or run on an old
/// map. A move freezes a bucket by locking its row <c>for update</c>: that bucket's writers wait inside PostgreSQL, every
/// other bucket runs on. Sessions that move rows set <c>shardkit.fence = off</c>.
/// </summary>
internal static class FenceSql
{
    /// <summary>
    /// Where a bucket this shard gave up went (the move's target, written with the giving up): the fence's refusal names
    /// it, so a refused write can go there at once. Added to fences made before it, without locking the table when it is
    /// already there; nothing where there is no fence (a move's preflight runs this too, on both sides). Adding it takes
    /// the table's exclusive lock, which every write of the shard then queues behind: it holds the lock seeding takes (so a
    /// seed and a move's preflight do not both add it) and waits at most <see cref="UpgradeLockTimeoutMs"/> (a prepared
    /// transaction holding a bucket would otherwise stall the shard's writes until it is resolved), failing with
    /// <c>55P03</c>.
    /// </summary>
    public static readonly string MovedToColumn = $$"""
        do $$
        declare
            previous text := current_setting('lock_timeout');
        begin
            if to_regclass('shardkit.bucket_owner') is not null and not {{HasMovedTo}} then
                perform pg_advisory_xact_lock({{ReshardingAdmin.LockKey}});
                if not {{HasMovedTo}} then
                    perform set_config('lock_timeout', '{{UpgradeLockTimeoutMs}}ms', true);
                    alter table shardkit.bucket_owner add column moved_to text;
                    perform set_config('lock_timeout', previous, true);
                end if;
            end if;
        end
        $$;
        """;

    /// <summary>How long adding <c>moved_to</c> to an older fence waits for the table's lock, in milliseconds.</summary>
    public const int UpgradeLockTimeoutMs = 500;

    private const string HasMovedTo = """
        exists (select 1 from pg_attribute where attrelid = to_regclass('shardkit.bucket_owner')
                and attname = 'moved_to' and not attisdropped)
        """;

    private static readonly string FunctionsBody = """
        create schema if not exists shardkit;
        create table if not exists shardkit.bucket_owner (
            bucket int primary key,
            owned boolean not null,
            epoch bigint not null default 0);
        """ + MovedToColumn + """

        -- The buckets an older ShardKit's write named for its statement's triggers to check; kept for triggers made before
        -- shardkit.name_buckets checked them itself (SeedAsync replaces those triggers).
        create or replace function shardkit.named_buckets() returns int[]
        language plpgsql
        as $$
        declare
            named text := current_setting('shardkit.buckets', true);
        begin
            if named is null or named = '' then
                return '{}';
            end if;
            perform set_config('shardkit.buckets', '', true);
            return string_to_array(named, ',')::int[];
        end
        $$;

        -- How a ShardKit write names its buckets (call shardkit.name_buckets('3,17') in front of it): a statement that
        -- returns no rows, so whoever reads the write's own rows (a query, a scalar, a grid) sees them first. They are
        -- checked at once, before the write runs, and its share locks keep them owned to the transaction's end: a write
        -- that touches no row is refused all the same, and an insert sent by an old map to a shard that gave the bucket
        -- up is refused there, not failed as a duplicate of the copy that shard keeps until the move's cleanup.
        create or replace procedure shardkit.name_buckets(buckets text)
        language plpgsql
        as $$
        begin
            perform shardkit.check_buckets(string_to_array(buckets, ',')::int[]);
        end
        $$;

        create or replace function shardkit.check_buckets(buckets int[]) returns void
        language plpgsql
        as $$
        begin
            if buckets is null or cardinality(buckets) = 0 or current_setting('shardkit.fence', true) = 'off' then
                return;
            end if;
            -- Lock first, in bucket order (a move locks the same way); then read what the lock let through.
            perform 1 from shardkit.bucket_owner where bucket = any(buckets) order by bucket for share;
            perform shardkit.refuse_unowned(buckets);
        end
        $$;

        -- How a ShardKit read by key names its buckets while they move (call shardkit.check_owned('3,17') in front of
        -- it): checked without a lock (a read changes nothing, and the old owner keeps its copies for the move's
        -- cleanup delay after the switch), so a read sent by a map older than the switch is refused instead of reading
        -- the old owner's copies, or none once they are deleted.
        create or replace procedure shardkit.check_owned(buckets text)
        language plpgsql
        as $$
        begin
            if buckets is null or buckets = '' or current_setting('shardkit.fence', true) = 'off' then
                return;
            end if;
            perform shardkit.refuse_unowned(string_to_array(buckets, ',')::int[]);
        end
        $$;

        create or replace function shardkit.refuse_unowned(buckets int[]) returns void
        language plpgsql
        as $$
        declare
            refused int;
            refused_epoch bigint;
            refused_to text;
            refused_detail text;
        begin
            select b, coalesce(o.epoch, 0), o.moved_to into refused, refused_epoch, refused_to
            from unnest(buckets) as b left join shardkit.bucket_owner o on o.bucket = b
            where o.owned is not true
            limit 1;
            if refused is not null then
                -- The figures go in the message too: Npgsql hides the detail unless the app's connection string asks for it.
                refused_detail := format('bucket=%s epoch=%s', refused, refused_epoch) || coalesce(' moved_to=' || refused_to, '');
                raise exception 'this shard does not own bucket %; %', refused, refused_detail
                    using errcode = 'SK001',
                          detail = refused_detail,
                          hint = 'The bucket lives on another shard: route the command by the current shard map.';
            end if;
        end
        $$;
        """;

    /// <summary>The version of <see cref="Functions"/>: a hash of their text, so any change to them is a new version.</summary>
    public static readonly string Version = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(
        System.Text.Encoding.UTF8.GetBytes(FunctionsBody)))[..16].ToLowerInvariant();

    /// <summary>
    /// The fence's schema, table and procedures of this ShardKit, ending with a comment on
    /// <c>shardkit.refuse_unowned</c> that records their version (<see cref="Version"/>), so a move's preflight can skip
    /// re-creating them (<see cref="FenceState"/>): re-creating a procedure makes every backend of the shard compile it
    /// again on its next write, which every writer of the shard feels.
    /// </summary>
    public static readonly string Functions = FunctionsBody + $"""

        comment on function shardkit.refuse_unowned(int[]) is '{VersionComment}';
        """;

    private static string VersionComment => "shardkit fence " + Version;

    /// <summary>
    /// Whether the fence is there and current, in one row: 0 no fence (no <c>shardkit.bucket_owner</c>), 1 a fence of
    /// this version with all its procedures and columns, 2 a fence that needs <see cref="Functions"/> (older, or a
    /// procedure or column missing).
    /// </summary>
    public static readonly string FenceState = $"""
        select case
            when to_regclass('shardkit.bucket_owner') is null then 0
            when to_regprocedure('shardkit.refuse_unowned(int[])') is not null
                 and obj_description(to_regprocedure('shardkit.refuse_unowned(int[])'), 'pg_proc') = '{VersionComment}'
                 and to_regprocedure('shardkit.check_buckets(int[])') is not null
                 and to_regprocedure('shardkit.name_buckets(text)') is not null
                 and to_regprocedure('shardkit.check_owned(text)') is not null
                 and to_regprocedure('shardkit.named_buckets()') is not null
                 and {HasMovedTo} then 1
            else 2
        end
        """;

    /// <summary>The bucket of column <paramref name="column"/> of <paramref name="type"/> in SQL (the type checked hashable before).</summary>
    public static string BucketOf(string type, string column, int bucketCount) =>
        BucketSql.BucketOf(BucketSql.HashOf(type, column) ?? throw new ArgumentException($"unhashable key type {type}", nameof(type)), bucketCount);

    /// <summary>
    /// The triggers of one table: after each insert, update and delete statement, the buckets of the rows it touched
    /// (old and new) are checked (those a ShardKit write named, <see cref="WriteFence.Named"/>, were checked before it
    /// ran). One function serves the three: PL/pgSQL plans a statement when it first runs it, so
    /// the branch that names a transition table the firing trigger lacks is never planned. <paramref name="table"/> and
    /// <paramref name="keyColumn"/> are plain identifiers.
    /// </summary>
    public static string Triggers(string table, string keyColumn, string keyType, int bucketCount)
    {
        var bucket = BucketOf(keyType, "r." + keyColumn, bucketCount);
        var name = FunctionName(table);
        return $$"""
            create or replace function shardkit."{{name}}"() returns trigger
            language plpgsql
            as $$
            begin
                if tg_op = 'INSERT' then
                    perform shardkit.check_buckets(array(select distinct {{bucket}} from fence_new r));
                elsif tg_op = 'DELETE' then
                    perform shardkit.check_buckets(array(select distinct {{bucket}} from fence_old r));
                else
                    perform shardkit.check_buckets(array(select {{bucket}} from fence_old r union select {{bucket}} from fence_new r));
                end if;
                return null;
            end
            $$;
            drop trigger if exists shardkit_fence_insert on {{table}};
            drop trigger if exists shardkit_fence_update on {{table}};
            drop trigger if exists shardkit_fence_delete on {{table}};
            create trigger shardkit_fence_insert after insert on {{table}} referencing new table as fence_new
                for each statement execute function shardkit."{{name}}"();
            create trigger shardkit_fence_update after update on {{table}} referencing old table as fence_old new table as fence_new
                for each statement execute function shardkit."{{name}}"();
            create trigger shardkit_fence_delete after delete on {{table}} referencing old table as fence_old
                for each statement execute function shardkit."{{name}}"();
            """;
    }

    /// <summary>Removes a table's fence triggers (the functions stay; they are harmless alone).</summary>
    public static string DropTriggers(string table) => $"""
        drop trigger if exists shardkit_fence_insert on {table};
        drop trigger if exists shardkit_fence_update on {table};
        drop trigger if exists shardkit_fence_delete on {table};
        """;

    /// <summary>Whether the fence triggers are on <c>$1</c> (a table name): the count of them, 3 when complete.</summary>
    public const string CountTriggers = """
        select count(*)::int from pg_trigger where tgrelid = to_regclass($1) and tgname like 'shardkit_fence_%' and not tgisinternal
        """;

    private static string FunctionName(string table) => "fence_" + table.Replace('.', '_');
}

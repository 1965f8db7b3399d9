using System.Globalization;
using Npgsql;

namespace ShardKit;

/// <summary>
/// ShardKit's placement written in SQL, for code that computes buckets on the server (id triggers, fences, moves,
/// audits): a key column's PostgreSQL hash as <see cref="PostgresHash"/> computes it, and the bucket of that hash as
/// <see cref="BucketMath.BucketOf"/> computes it.
/// </summary>
internal static class BucketSql
{
    /// <summary>The type of a table's column as <c>regtype</c> prints it ($1 the table, $2 the column; null when missing).</summary>
    public const string ColumnTypeQuery =
        "select a.atttypid::regtype::text from pg_attribute a where a.attrelid = to_regclass($1) and a.attname = lower($2) and not a.attisdropped";

    /// <summary>The key kind a column of <paramref name="type"/> (as <c>regtype</c> prints it) is hashed as, or null when ShardKit does not hash it.</summary>
    public static ShardKeyKind? KindOf(string type) => type switch
    {
        "smallint" or "integer" or "bigint" => ShardKeyKind.Integer,
        "text" or "character varying" => ShardKeyKind.String,
        "uuid" => ShardKeyKind.Guid,
        _ => null,
    };

    /// <summary>The hash of the key expression <paramref name="key"/> of <paramref name="kind"/>: e.g. <c>hashint8(id::bigint)</c>.</summary>
    public static string HashOf(ShardKeyKind kind, string key) => kind switch
    {
        ShardKeyKind.Integer => $"hashint8({key}::bigint)",
        ShardKeyKind.Guid => $"uuid_hash({key})",
        _ => $"hashtext({key}::text)",
    };

    /// <summary>The hash of <paramref name="key"/>, a column of <paramref name="type"/>; null when ShardKit does not hash that type.</summary>
    public static string? HashOf(string type, string key) => KindOf(type) is { } kind ? HashOf(kind, key) : null;

    /// <summary>The bucket (an <c>int</c>) of the hash expression <paramref name="hash"/>: <c>((hash + 2^31) * B) &gt;&gt; 32</c>.</summary>
    public static string BucketOf(string hash, int bucketCount) =>
        string.Create(CultureInfo.InvariantCulture, $"((({hash})::bigint + 2147483648) * {bucketCount} >> 32)::int");

    /// <summary>The type of <paramref name="table"/>.<paramref name="column"/> as <c>regtype</c> prints it, or null when there is no such column.</summary>
    public static async Task<string?> ColumnTypeAsync(NpgsqlCommand command, string table, string column, CancellationToken cancellationToken)
    {
        command.CommandText = ColumnTypeQuery;
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = table });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = column });
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) as string;
    }
}

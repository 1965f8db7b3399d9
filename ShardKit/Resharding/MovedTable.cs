using System.Globalization;

namespace ShardKit;

/// <summary>
/// A hash-sharded table whose buckets move: its columns in catalog order (generated columns left out, as COPY and
/// pgoutput leave them out), the columns that identify a row, and the SQL that hashes its shard key on the server.
/// </summary>
/// <param name="Schema">The table's schema.</param>
/// <param name="Name">The table's name.</param>
/// <param name="KeyColumn">The shard key column.</param>
/// <param name="KeyKind">How the key is hashed: <see cref="ShardKeyKind.Integer"/>, <see cref="ShardKeyKind.String"/> or <see cref="ShardKeyKind.Guid"/>.</param>
/// <param name="PrimaryKey">The primary key (or replica identity index) columns.</param>
/// <param name="Columns">Every stored column, in catalog order.</param>
/// <param name="ColumnTypes">Each column's SQL type as <c>format_type</c> prints it, in the order of <see cref="Columns"/>.</param>
internal sealed record MovedTable(
    string Schema,
    string Name,
    string KeyColumn,
    ShardKeyKind KeyKind,
    IReadOnlyList<string> PrimaryKey,
    IReadOnlyList<string> Columns,
    IReadOnlyList<string> ColumnTypes)
{
    /// <summary>The quoted <c>"schema"."name"</c>.</summary>
    public string QualifiedName => Quote(Schema) + "." + Quote(Name);

    /// <summary>The key's PostgreSQL hash, as ShardKit places it: e.g. <c>hashint8("id"::bigint)</c>.</summary>
    public string HashSql => ShardKit.BucketSql.HashOf(KeyKind, Quote(KeyColumn));

    /// <summary>
    /// The bucket of a row, as <see cref="BucketMath.BucketOf"/> computes it: <c>((hash + 2^31) * B) &gt;&gt; 32</c>;
    /// <paramref name="alias"/> qualifies the key column (for a row of a join or an <c>ON CONFLICT</c> target).
    /// </summary>
    public string BucketSql(int bucketCount, string? alias = null) =>
        ShardKit.BucketSql.BucketOf(ShardKit.BucketSql.HashOf(KeyKind, alias is null ? Quote(KeyColumn) : alias + "." + Quote(KeyColumn)), bucketCount);

    /// <summary>The columns quoted and joined by commas.</summary>
    public string ColumnList => string.Join(", ", Columns.Select(Quote));

    /// <summary>The type of column <paramref name="column"/>.</summary>
    public string TypeOf(string column) => ColumnTypes[IndexOf(column)];

    /// <summary>The position of <paramref name="column"/> in <see cref="Columns"/>.</summary>
    public int IndexOf(string column)
    {
        for (var i = 0; i < Columns.Count; i++)
        {
            if (string.Equals(Columns[i], column, StringComparison.Ordinal))
            {
                return i;
            }
        }

        // The stream names a column the move's description of the table lacks: the table changed while the move ran.
        throw new BucketMoveException($"{QualifiedName} has a column {Quote(column)} it did not have when this run of the move described it " +
            "(the table changed while the move ran). Resume the move: a resumed run describes the tables again.");
    }

    /// <summary>An identifier quoted for SQL.</summary>
    public static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <summary>The key's bucket from its text form as pgoutput sends it, hashed as <see cref="HashSql"/> hashes it.</summary>
    public int BucketOfText(string keyText, int bucketCount) => BucketMath.BucketOf(KeyKind switch
    {
        ShardKeyKind.Integer => PostgresHash.HashInt8(long.Parse(keyText, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture)),
        ShardKeyKind.Guid => PostgresHash.UuidHash(Guid.Parse(keyText, CultureInfo.InvariantCulture)),
        _ => PostgresHash.HashText(keyText),
    }, bucketCount);
}

using System.Security.Cryptography;
using System.Text;

namespace ShardKit;

/// <summary>
/// One versioned schema change applied to every shard. Scripts run in <see cref="Version"/> order; each is recorded in the
/// shard's history table with its <see cref="Checksum"/>, so a script edited after it ran is reported as drift.
/// </summary>
/// <example>
/// <code>
/// var migrations = new[]
/// {
///     new Migration(1, "create_orders", "create table orders (customer_id bigint not null, id bigint not null)"),
///     new Migration(2, "orders_by_customer", "create index concurrently if not exists orders_by_customer on orders (customer_id)")
///         { IsTransactional = false },
/// };
/// </code>
/// </example>
public sealed class Migration
{
    /// <summary>The first-line comment that marks a script to run outside a transaction (<c>CREATE INDEX CONCURRENTLY</c>).</summary>
    public const string NoTransactionMarker = "-- shardkit:no-transaction";

    /// <summary>Creates a migration; a script whose first line is <see cref="NoTransactionMarker"/> is non-transactional.</summary>
    /// <param name="version">A positive number; scripts run in ascending order and each version appears once.</param>
    /// <param name="name">A short name, recorded in the history table (<c>create_orders</c>).</param>
    /// <param name="sql">The script: one or more statements separated by semicolons.</param>
    /// <exception cref="ArgumentException">The version is not positive, or the name or script is empty.</exception>
    public Migration(long version, string name, string sql)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(version);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentException.ThrowIfNullOrWhiteSpace(sql);
        Version = version;
        Name = name;
        Sql = sql;
        Checksum = ChecksumOf(sql);
        IsTransactional = !StartsWithMarker(sql);
    }

    /// <summary>The version; scripts run in ascending order.</summary>
    public long Version { get; }

    /// <summary>The name recorded in the history table.</summary>
    public string Name { get; }

    /// <summary>The script text.</summary>
    public string Sql { get; }

    /// <summary>Lower-case hex SHA-256 of the script with line endings normalized to <c>\n</c>, so a checkout on Windows matches.</summary>
    public string Checksum { get; }

    /// <summary>
    /// True (the default): the script and its history row commit together on each shard, or neither does. False: it runs
    /// statement by statement outside a transaction, as <c>CREATE INDEX CONCURRENTLY</c> requires; it must then be
    /// idempotent (<c>IF NOT EXISTS</c>), because a shard where it stopped halfway runs it again.
    /// </summary>
    public bool IsTransactional { get; init; }

    /// <summary>The script's label in messages: <c>0001_create_orders</c>.</summary>
    public override string ToString() => $"{Version:D4}_{Name}";

    internal static string ChecksumOf(string sql)
    {
        var normalized = sql.Replace("\r\n", "\n", StringComparison.Ordinal).Replace('\r', '\n');
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(normalized))).ToLowerInvariant();
    }

    private static bool StartsWithMarker(string sql)
    {
        var firstLine = sql.TrimStart('\uFEFF', ' ', '\t', '\r', '\n').Split('\n', 2)[0].Trim();
        return firstLine.Equals(NoTransactionMarker, StringComparison.OrdinalIgnoreCase);
    }
}

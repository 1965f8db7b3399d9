using System.Globalization;
using Npgsql;

namespace ShardKit;

/// <summary>
/// The statement a ShardKit write sends in front of its own on a shard that follows a stored map, in the same round trip
/// and transaction: it names the buckets the write is routed by to the procedure <c>shardkit.name_buckets</c>, which
/// checks them against the shard's fence (<c>FenceSql</c>) before the write runs. A write that touches no row (an update
/// or delete by a map older than a finished move finds nothing on the old owner) is refused all the same, and so is an
/// insert whose key still has a copy there (not failed as a duplicate). A <c>call</c> returns no rows, so Npgsql's reader starts at the write's own result: Dapper reads
/// a fenced <c>insert … returning</c> exactly as an unfenced one.
/// </summary>
internal static class WriteFence
{
    /// <summary>The statement, with the buckets as the named parameter <see cref="BucketsParameter"/>.</summary>
    public const string Named = "call shardkit.name_buckets(@" + BucketsParameter + ")";

    /// <summary><see cref="Named"/> with a positional parameter, for a batch command.</summary>
    public const string NamedPositional = "call shardkit.name_buckets($1)";

    /// <summary>
    /// The statement a read by key sends in front of its own while one of its buckets moves: the shard checks, without a
    /// lock, that it owns them (<c>shardkit.check_owned</c>), so a read sent by a map older than the switch is refused
    /// and routed again instead of reading the old owner's copies. Same parameter as <see cref="Named"/>.
    /// </summary>
    public const string OwnedRead = "call shardkit.check_owned(@" + BucketsParameter + ")";

    /// <summary>
    /// Whether <paramref name="error"/> (or an error inside it) says the server has no <c>shardkit.check_owned</c>
    /// (<see cref="OwnedRead"/>): a fence seeded by an older ShardKit, or a standby that has not yet replayed its
    /// primary's upgrade of the fence.
    /// </summary>
    public static bool IsMissingReadCheck(Exception? error)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            if (e is PostgresException { SqlState: PostgresErrorCodes.UndefinedFunction } missing
                && missing.MessageText.Contains("shardkit.check_owned", StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Whether <paramref name="error"/> (or an error inside it) says the server has no <c>shardkit.name_buckets</c>
    /// (<see cref="Named"/>): the fence a data source without a stored map found there is gone.
    /// </summary>
    public static bool IsMissingFence(Exception? error)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            if (e is PostgresException { SqlState: PostgresErrorCodes.UndefinedFunction } missing
                && missing.MessageText.Contains("shardkit.name_buckets", StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The parameter of <see cref="Named"/>: the buckets as text, <c>3,17</c>.</summary>
    public const string BucketsParameter = "shardkit_fence_buckets";

    /// <summary>The value of <see cref="BucketsParameter"/>.</summary>
    public static string BucketList(IEnumerable<int> buckets) => string.Join(",", buckets.Select(b => b.ToString(CultureInfo.InvariantCulture)));

    /// <summary>
    /// Whether <paramref name="sql"/> changes data (see <see cref="CommandSummary.ChangesData"/>): the only text the fence
    /// statement goes in front of, so a statement that cannot run in a transaction block (vacuum, create index
    /// concurrently, a procedure that commits) is left as it is; and, sent through <c>Query</c> or <c>ExecuteScalar</c>
    /// (<c>insert … returning</c>), a write all the same: it runs on the primary, is not retried as a read would be, and
    /// names its buckets. Text starting with a plain verb is decided without the lexer; the rest is read once per text.
    /// </summary>
    public static bool ChangesData(string? sql)
    {
        if (string.IsNullOrEmpty(sql))
        {
            return false;
        }

        if (sql.Contains(';', StringComparison.Ordinal))
        {
            return CommandSummary.Of(sql).ChangesData; // several statements: any of them may write
        }

        var text = sql.AsSpan().TrimStart();
        foreach (var verb in (ReadOnlySpan<string>)["select", "insert", "update", "delete", "merge"])
        {
            if (text.StartsWith(verb, StringComparison.OrdinalIgnoreCase) && (text.Length == verb.Length || !IsWordPart(text[verb.Length])))
            {
                return verb != "select";
            }
        }

        return CommandSummary.Of(sql).ChangesData; // with …, a comment first, or anything else: read by the lexer, cached
    }

    /// <summary>
    /// Whether <paramref name="sql"/> is a query that changes nothing (it starts as <c>select</c>, <c>values</c>,
    /// <c>table</c>, or a <c>with</c> leading to one): the only text a read's fence statement goes in front of.
    /// </summary>
    public static bool IsQuery(string? sql)
    {
        if (string.IsNullOrEmpty(sql))
        {
            return false;
        }

        var text = sql.AsSpan().TrimStart();
        if (!sql.Contains(';', StringComparison.Ordinal) && text.StartsWith("select", StringComparison.OrdinalIgnoreCase)
            && (text.Length == 6 || !IsWordPart(text[6])))
        {
            return true;
        }

        var summary = CommandSummary.Of(sql);
        return !summary.ChangesData && summary.Operation is { } operation
            && (operation.Equals("select", StringComparison.OrdinalIgnoreCase) || operation.Equals("values", StringComparison.OrdinalIgnoreCase)
                || operation.Equals("table", StringComparison.OrdinalIgnoreCase));
    }

    private static bool IsWordPart(char c) => char.IsLetterOrDigit(c) || c is '_' or '$';
}

namespace ShardKit;

/// <summary>
/// The global id of a two-phase transaction, used as the <c>PREPARE TRANSACTION</c> gid on every shard:
/// <c>shardkit:&lt;coordinator shard&gt;:&lt;32 hex digits&gt;</c>. The prefix is what <c>CheckHealthAsync</c> counts and
/// recovery looks for; the coordinator names the shard whose decision log holds the outcome.
/// </summary>
internal static class GlobalTransactionId
{
    public const string Prefix = "shardkit:";

    public const int MaxCoordinatorLength = DistributedTransactionOptions.MaxCoordinatorLength;

    public static string New(string coordinator) => Prefix + coordinator + ":" + Guid.NewGuid().ToString("N");

    /// <summary>The coordinator shard named in <paramref name="gid"/>, or null when it is not a ShardKit gid.</summary>
    public static string? CoordinatorOf(string gid)
    {
        if (!gid.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return null;
        }

        var last = gid.LastIndexOf(':');
        return last > Prefix.Length && gid.Length - last - 1 == 32 ? gid[Prefix.Length..last] : null;
    }
}

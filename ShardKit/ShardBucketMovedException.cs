using Npgsql;

namespace ShardKit;

/// <summary>
/// A shard refused a write because it no longer owns (or does not yet own) the hash bucket of a row: the bucket moved
/// to another shard (<see cref="ShardResharding.MoveBucketsAsync"/>). Outside a transaction ShardKit follows the move
/// itself (it reloads the stored map and runs the command again on the new owner); inside one, or when the map does
/// not change in time, this reaches the caller: roll the transaction back and run it again.
/// </summary>
public sealed class ShardBucketMovedException : ShardKitException
{
    /// <summary>The SQLSTATE of the shard's fence (<c>shardkit.check_buckets</c>).</summary>
    public const string SqlState = "SK001";

    /// <summary>Creates an exception naming the shard that refused and the bucket it refused, from the fence's error.</summary>
    public ShardBucketMovedException(string shard, PostgresException error)
        : base($"Shard '{shard}' refused a write: {error.MessageText}. Either the bucket moved to another shard (ShardKit " +
               "retries such a write on the new owner outside a transaction; inside one, roll it back and run it again), or the " +
               "write gives a row a shard key of a bucket this shard does not own (an update of the key: delete the row and " +
               "insert it with its new key, which routes it to its shard).",
            error)
    {
        ArgumentNullException.ThrowIfNull(error);
        Shard = shard;
        (Bucket, Epoch, MovedTo) = Parse(FiguresOf(error));
    }

    // A refusal read from the shard's fence after another error (see ShardCopy): the figures as the fence holds them.
    internal ShardBucketMovedException(string shard, int bucket, long epoch, string? movedTo, string message, Exception innerException)
        : base(message, innerException)
    {
        Shard = shard;
        (Bucket, Epoch, MovedTo) = (bucket, epoch, movedTo);
    }

    /// <summary>Creates an exception with a message.</summary>
    public ShardBucketMovedException(string message)
        : base(message) => Shard = "";

    /// <summary>Creates an exception with a message and a cause.</summary>
    public ShardBucketMovedException(string message, Exception? innerException)
        : base(message, innerException) => Shard = "";

    /// <summary>Creates an exception with no message.</summary>
    public ShardBucketMovedException() => Shard = "";

    /// <summary>The shard that refused the write.</summary>
    public string Shard { get; }

    /// <summary>The refused bucket; -1 when the shard did not say.</summary>
    public int Bucket { get; } = -1;

    /// <summary>The bucket's epoch on the refusing shard (the epoch of the move that took it away); 0 when unknown.</summary>
    public long Epoch { get; }

    /// <summary>
    /// The shard the refusing shard says the bucket went to (the target of the move that took it away, recorded with the
    /// giving up); null when it does not say (the bucket was never its own, or its fence predates this). Only a hint:
    /// that shard's own fence decides whether it owns the bucket now.
    /// </summary>
    public string? MovedTo { get; }

    /// <summary>Whether <paramref name="error"/>, or an error inside it, is a shard's refusal of a moved bucket.</summary>
    public static bool IsMoved(Exception? error)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            if (e is ShardBucketMovedException or PostgresException { SqlState: SqlState })
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The shard's refusal in <paramref name="error"/> or an error inside it; null when there is none.</summary>
    internal static ShardBucketMovedException? Find(Exception? error, string shard)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            switch (e)
            {
                case ShardBucketMovedException moved:
                    return moved;
                case PostgresException { SqlState: SqlState } refusal:
                    return new ShardBucketMovedException(shard, refusal);
            }
        }

        return null;
    }

    // The fence puts its figures in the detail and, after "; ", in the message: Npgsql replaces the detail with a notice
    // unless the connection string includes error details, so the message is read when the detail does not hold them.
    // A fence older than that names only the bucket, in neither.
    private static string? FiguresOf(PostgresException error)
    {
        if (error.Detail is { } detail && detail.StartsWith("bucket=", StringComparison.Ordinal))
        {
            return detail;
        }

        var text = error.MessageText ?? "";
        var at = text.IndexOf("; bucket=", StringComparison.Ordinal);
        return at >= 0 ? text[(at + 2)..] : null;
    }

    // The figures read "bucket=<n> epoch=<e>", then " moved_to=<shard name>" (to the end: a name may hold spaces)
    // when the shard recorded where the bucket went.
    private static (int Bucket, long Epoch, string? MovedTo) Parse(string? detail)
    {
        var bucket = -1;
        var epoch = 0L;
        string? movedTo = null;
        detail ??= "";
        var to = detail.IndexOf(" moved_to=", StringComparison.Ordinal);
        if (to >= 0)
        {
            movedTo = detail[(to + " moved_to=".Length)..];
            detail = detail[..to];
        }

        foreach (var part in detail.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part.StartsWith("bucket=", StringComparison.Ordinal))
            {
                _ = int.TryParse(part.AsSpan(7), System.Globalization.CultureInfo.InvariantCulture, out bucket);
            }
            else if (part.StartsWith("epoch=", StringComparison.Ordinal))
            {
                _ = long.TryParse(part.AsSpan(6), System.Globalization.CultureInfo.InvariantCulture, out epoch);
            }
        }

        return (bucket, epoch, movedTo is { Length: > 0 } ? movedTo : null);
    }
}

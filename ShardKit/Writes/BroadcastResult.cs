namespace ShardKit;

/// <summary>What a statement broadcast to several shards did: affected rows per shard and in total.</summary>
public sealed class BroadcastResult
{
    internal BroadcastResult(IReadOnlyDictionary<string, int> affectedRows, IReadOnlyList<ShardFailure> failures)
    {
        AffectedRows = affectedRows;
        Failures = failures;
    }

    /// <summary>Rows affected on each shard that ran the statement, by shard name.</summary>
    public IReadOnlyDictionary<string, int> AffectedRows { get; }

    /// <summary>The total of <see cref="AffectedRows"/>.</summary>
    public int Total => AffectedRows.Values.Sum();

    /// <summary>Shards that failed (only with <see cref="FanOutPolicy.PartialResults"/>; otherwise the call throws).</summary>
    public IReadOnlyList<ShardFailure> Failures { get; }

    /// <summary>True when every targeted shard ran the statement.</summary>
    public bool IsComplete => Failures.Count == 0;
}

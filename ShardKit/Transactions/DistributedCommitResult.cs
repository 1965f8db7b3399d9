namespace ShardKit;

/// <summary>
/// What <see cref="DistributedTransaction.CommitAsync"/> did. Returned only when the transaction is committed: its
/// outcome is durable on every shard, even when <see cref="PendingShards"/> still have to apply it.
/// </summary>
public sealed class DistributedCommitResult
{
    internal DistributedCommitResult(string? globalId, IReadOnlyList<string> shards, IReadOnlyList<string> pendingShards)
    {
        GlobalId = globalId;
        Shards = shards;
        PendingShards = pendingShards;
    }

    /// <summary>The two-phase commit's global id (<c>shardkit:…</c>); null when one shard or none took part.</summary>
    public string? GlobalId { get; }

    /// <summary>True when two-phase commit ran (two or more shards were written); one shard commits plainly.</summary>
    public bool UsedTwoPhaseCommit => GlobalId is not null;

    /// <summary>The shards the transaction touched, in shard order.</summary>
    public IReadOnlyList<string> Shards { get; }

    /// <summary>
    /// Shards whose <c>COMMIT PREPARED</c> did not complete (unreachable after the decision was logged). The commit is
    /// decided: <see cref="ShardedDataSource.RecoverAsync"/> applies it there once they answer; until then their rows
    /// stay locked and invisible.
    /// </summary>
    public IReadOnlyList<string> PendingShards { get; }

    /// <summary>True when every shard has applied the commit.</summary>
    public bool IsComplete => PendingShards.Count == 0;
}

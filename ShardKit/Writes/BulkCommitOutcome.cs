namespace ShardKit;

/// <summary>What the commit step did on each shard.</summary>
/// <param name="Committed">Shards whose rows are committed.</param>
/// <param name="RolledBack">Shards whose commit PostgreSQL refused, so they keep nothing, with its error.</param>
/// <param name="InDoubt">Shards whose commit was sent but not answered (a lost connection): they may keep their rows.</param>
internal sealed record BulkCommitOutcome(IReadOnlyList<string> Committed, IReadOnlyList<ShardFailure> RolledBack, IReadOnlyList<ShardFailure> InDoubt)
{
    public bool Succeeded => RolledBack.Count == 0 && InDoubt.Count == 0;
}

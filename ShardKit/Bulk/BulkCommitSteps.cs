namespace ShardKit;

/// <summary>Chooses the commit step of a bulk load from its options: the one place a two-phase commit plugs in.</summary>
internal static class BulkCommitSteps
{
    public static IBulkCommitStep For(BulkInsertOptions options, ShardedConnection connection)
    {
        // All-or-nothing loads run inside a distributed transaction (see ShardedConnection.Bulk.cs): their COPYs open
        // no transaction of their own, so this step has nothing to commit and the distributed commit does the rest.
        _ = options;
        _ = connection;
        return CommitAfterAllCopies.Instance;
    }
}

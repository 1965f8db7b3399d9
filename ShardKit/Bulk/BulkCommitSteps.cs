namespace ShardKit;

/// <summary>Chooses the commit step of a bulk load from its options: the one place a two-phase commit plugs in.</summary>
internal static class BulkCommitSteps
{
    public static IBulkCommitStep For(BulkInsertOptions options, ShardedConnection connection)
    {
        _ = connection; // a two-phase step needs the data source (its decision log); the current step does not
        if (options.AllOrNothing)
        {
            // Pending: the PREPARE TRANSACTION-based distributed transaction; swap it in here.
            throw new NotSupportedException(
                "BulkInsertOptions.AllOrNothing needs two-phase commit across shards, which ShardKit does not offer yet. " +
                "Leave it off: every shard then commits together, only after every shard's COPY succeeded.");
        }

        return CommitAfterAllCopies.Instance;
    }
}

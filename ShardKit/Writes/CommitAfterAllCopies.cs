using Npgsql;

namespace ShardKit;

/// <summary>
/// Commits every shard's transaction at once, after all COPYs succeeded: the window in which one shard can commit
/// while another fails is a single round trip. A commit PostgreSQL answers with an error rolled back; a commit that
/// got no answer is in doubt.
/// </summary>
internal static class CommitAfterAllCopies
{
    public static async Task<BulkCommitOutcome> CommitAsync(IReadOnlyList<ShardCommitTarget> targets)
    {
        var errors = await Task.WhenAll(targets.Select(CommitOneAsync)).ConfigureAwait(false);
        var committed = new List<string>();
        var rolledBack = new List<ShardFailure>();
        var inDoubt = new List<ShardFailure>();
        for (var i = 0; i < targets.Count; i++)
        {
            switch (errors[i])
            {
                case null: committed.Add(targets[i].Name); break;
                case PostgresException e: rolledBack.Add(new ShardFailure(targets[i].Name, e)); break;
                case var e: inDoubt.Add(new ShardFailure(targets[i].Name, e)); break;
            }
        }

        return new BulkCommitOutcome(committed, rolledBack, inDoubt);
    }

    private static async Task<Exception?> CommitOneAsync(ShardCommitTarget target)
    {
        try
        {
            await target.Transaction.CommitAsync(CancellationToken.None).ConfigureAwait(false);
            return null;
        }
#pragma warning disable CA1031 // every shard's outcome is reported; none may hide another's
        catch (Exception e)
#pragma warning restore CA1031
        {
            return e;
        }
    }
}

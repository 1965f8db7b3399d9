namespace ShardKit;

/// <summary>
/// THE SEAM for distributed commit: the last step of a bulk load, run only once every shard's COPY has completed
/// inside its own open transaction. <see cref="BulkCommitSteps.For"/> chooses the implementation; today that is
/// <see cref="CommitAfterAllCopies"/>. A two-phase implementation (<c>PREPARE TRANSACTION</c> on every shard, the
/// decision logged, then <c>COMMIT PREPARED</c>) only has to implement this interface and be returned by
/// <see cref="BulkCommitSteps.For"/> when <see cref="BulkInsertOptions.AllOrNothing"/> is set; nothing else in the
/// load changes. On any failure before this step the load rolls every transaction back itself.
/// </summary>
internal interface IBulkCommitStep
{
    /// <summary>
    /// Commits every target. It must not be cancelled half-way (it receives no token) and must report each shard:
    /// committed, rolled back, or in doubt.
    /// </summary>
    Task<BulkCommitOutcome> CommitAsync(IReadOnlyList<ShardCommitTarget> targets);
}

using Npgsql;

namespace ShardKit;

public sealed partial class DistributedTransaction
{
    /// <summary>
    /// Commits on every shard touched, atomically. One shard: a plain <c>COMMIT</c>. Several: <c>PREPARE TRANSACTION</c>
    /// on each shard other than the coordinator (in parallel). If a shard refuses (also when a command in the transaction
    /// failed there earlier, which PostgreSQL would otherwise answer with a silent rollback), everything is rolled back and
    /// a <see cref="ShardAggregateException"/> names the shard; either way the connection's sessions are left outside any
    /// transaction, ready for the next command. Then the commit decision is written to the coordinator's decision log, in
    /// the coordinator's own transaction when it took part (its data commits with the decision, in one round trip), and
    /// from that moment the transaction is committed: <c>COMMIT PREPARED</c> runs on each prepared shard (in parallel), and
    /// a shard that cannot be reached is listed in <see cref="DistributedCommitResult.PendingShards"/> for recovery to
    /// finish, never thrown. If the decision itself cannot be confirmed, <see cref="DistributedTransactionInDoubtException"/>
    /// says so. <paramref name="cancellationToken"/> is honored until the decision starts being written (a cancelled
    /// commit rolls back everywhere), not after.
    /// </summary>
    public async Task<DistributedCommitResult> CommitAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfNotActive();
        _state = (int)Phase.Committing;
        var shards = TouchedShards();
        using var activity = ShardKitTelemetry.StartDistributed("commit", shards.Length);
        try
        {
            switch (shards.Length)
            {
                case 0:
                    _state = (int)Phase.Committed;
                    return new DistributedCommitResult(null, [], []);
                case 1:
                    await CommitSingleAsync(shards[0], activity, cancellationToken).ConfigureAwait(false);
                    await RememberCommitsAsync(shards).ConfigureAwait(false);
                    return new DistributedCommitResult(null, NamesOf(shards), []);
                default:
                    var result = await CommitTwoPhaseAsync(shards, activity, cancellationToken).ConfigureAwait(false);
                    await RememberCommitsAsync(shards.Where(shard => !result.PendingShards.Contains(Set.NameOf(shard)))).ConfigureAwait(false);
                    return result;
            }
        }
        finally
        {
            _session.EndEnlistment(this);
        }
    }

    private async Task CommitSingleAsync(int shard, System.Diagnostics.Activity? activity, CancellationToken cancellationToken)
    {
        var name = Set.NameOf(shard);
        if (cancellationToken.IsCancellationRequested)
        {
            await RollbackOnAsync(shard, CancellationToken.None).ConfigureAwait(false);
            _state = (int)Phase.RolledBack;
            ShardKitTelemetry.RecordOutcome(activity, "rolled_back");
            cancellationToken.ThrowIfCancellationRequested();
        }

        try
        {
            await ExecuteEndingAsync(shard, "commit", cancellationToken).ConfigureAwait(false);
            _state = (int)Phase.Committed;
            ShardKitTelemetry.RecordOutcome(activity, "committed");
        }
        catch (PostgresException e) when (!ShardErrors.IsConnectionFailure(e))
        {
            // The server refused, so nothing was committed: the same error as when one of several shards cannot prepare.
            await RollbackOnAsync(shard, CancellationToken.None).ConfigureAwait(false);
            _state = (int)Phase.RolledBack;
            ShardKitTelemetry.RecordOutcome(activity, "rolled_back");
            throw new ShardAggregateException([new ShardFailure(name, Refusal(name, e))]);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The connection broke while COMMIT was in flight: the outcome is unknown, as with any single-server commit.
            // The connection is closed so the next command on this shard starts from a clean session.
            await CloseParticipantAsync(shard).ConfigureAwait(false);
            _state = (int)Phase.InDoubt;
            ShardKitTelemetry.RecordOutcome(activity, "in_doubt");
            throw;
        }
    }

    private async Task<DistributedCommitResult> CommitTwoPhaseAsync(int[] shards, System.Diagnostics.Activity? activity, CancellationToken cancellationToken)
    {
        var names = NamesOf(shards);
        var coordinator = Settings.CoordinatorIndex;
        var gid = GlobalTransactionId.New(Set.NameOf(coordinator));
        GlobalId = gid;

        // When the coordinator takes part, its own part is not prepared: it commits in the same local transaction that
        // records the decision (as Citus does), which saves its PREPARE and COMMIT PREPARED round trips.
        var local = shards.Contains(coordinator);
        var prepared = local ? shards.Where(shard => shard != coordinator).ToArray() : shards;
        await StepAsync(DistributedStep.BeforePrepare, null).ConfigureAwait(false);
        if (cancellationToken.IsCancellationRequested)
        {
            // Cancelled before anything was asked: rolled back everywhere, and the caller gets the cancellation as such.
            await Task.WhenAll(shards.Select(shard => RollbackOnAsync(shard, CancellationToken.None))).ConfigureAwait(false);
            _state = (int)Phase.RolledBack;
            ShardKitTelemetry.RecordOutcome(activity, "rolled_back");
            cancellationToken.ThrowIfCancellationRequested();
        }

        var cannot = local ? CoordinatorLost(coordinator) ?? await EnsureDecisionLogAsync(coordinator).ConfigureAwait(false) : null;
        if (cannot is not null)
        {
            await Task.WhenAll(shards.Select(shard => RollbackOnAsync(shard, CancellationToken.None))).ConfigureAwait(false);
            _state = (int)Phase.RolledBack;
            ShardKitTelemetry.RecordOutcome(activity, "rolled_back");
            throw new ShardAggregateException([new ShardFailure(Set.NameOf(coordinator), cannot)]);
        }

        // Phase 1. Every shard is asked even when one fails early, so each ends prepared or rolled back, never open.
        var failures = await Task.WhenAll(prepared.Select(shard => PrepareAsync(shard, gid, cancellationToken))).ConfigureAwait(false);
        if (failures.Any(f => f is not null))
        {
            var failed = failures.OfType<ShardFailure>().ToArray();
            // A failed shard may still have prepared (its answer was lost), so every shard is asked; "does not exist" is fine.
            await RollbackAllAsync(prepared, local ? coordinator : null, gid).ConfigureAwait(false);
            _state = (int)Phase.RolledBack;
            ShardKitTelemetry.RecordOutcome(activity, "rolled_back");
            ShardKitLog.DistributedPrepareFailed(Set.Logger, gid, string.Join(", ", failed.Select(f => f.Shard)));
            // Only the caller's cancellation stopped it: rolled back everywhere, reported as the cancellation it is.
            if (cancellationToken.IsCancellationRequested && failed.All(f => f.Error is OperationCanceledException))
            {
                throw new OperationCanceledException("The distributed commit was cancelled before its decision; it was rolled back on every shard.",
                    failed[0].Error, cancellationToken);
            }

            throw new ShardAggregateException(failed);
        }

        await StepAsync(DistributedStep.BeforeDecision, null).ConfigureAwait(false);
        if (cancellationToken.IsCancellationRequested)
        {
            await RollbackAllAsync(prepared, local ? coordinator : null, gid).ConfigureAwait(false);
            _state = (int)Phase.RolledBack;
            ShardKitTelemetry.RecordOutcome(activity, "rolled_back");
            cancellationToken.ThrowIfCancellationRequested();
        }

        // The decision. Once the commit row is durable the transaction is committed, whatever happens next, so from
        // here on cancellation is no longer honored: the caller gets a definite answer.
        var refusal = local
            ? await CommitWithDecisionAsync(gid, names, coordinator, activity).ConfigureAwait(false)
            : await DecideAsync(gid, names, coordinator, activity).ConfigureAwait(false);
        if (refusal is not null)
        {
            await RollbackPreparedAsync(prepared, gid).ConfigureAwait(false);
            _state = (int)Phase.RolledBack;
            ShardKitTelemetry.RecordOutcome(activity, "rolled_back");
            ShardKitLog.DistributedAbortedByRecovery(Set.Logger, gid);
            throw new ShardAggregateException([new ShardFailure(Set.NameOf(coordinator), refusal)]);
        }

        _state = (int)Phase.Committed;
        ShardKitTelemetry.RecordOutcome(activity, "committed");
        await StepAsync(DistributedStep.AfterDecision, null).ConfigureAwait(false);

        // Phase 2. Past the decision nothing throws: a shard that cannot commit now is finished by recovery.
        var pending = await Task.WhenAll(prepared.Select(shard => CommitPreparedAsync(shard, gid))).ConfigureAwait(false);
        var pendingNames = pending.OfType<string>().ToArray();
        if (pendingNames.Length > 0)
        {
            ShardKitLog.DistributedCommitPending(Set.Logger, gid, string.Join(", ", pendingNames));
        }
        else
        {
            ShardKitLog.DistributedCommitted(Set.Logger, gid, shards.Length);
        }

        return new DistributedCommitResult(gid, names, pendingNames);
    }

    // Read-your-writes: each shard's WAL position after its commit, read on the participant's connection (still open).
    private async Task RememberCommitsAsync(IEnumerable<int> committed)
    {
        foreach (var shard in committed)
        {
            if (_participants[shard] is { State: System.Data.ConnectionState.Open } connection)
            {
                await _session.WroteAsync(shard, connection, async: true, CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    // Rolls back the prepared shards and, when the coordinator commits locally, its still-open transaction.
    private async Task RollbackAllAsync(int[] prepared, int? local, string gid)
    {
        var localRollback = local is { } shard ? RollbackOnAsync(shard, CancellationToken.None) : Task.CompletedTask;
        await Task.WhenAll(RollbackPreparedAsync(prepared, gid), localRollback).ConfigureAwait(false);
    }

    private async Task<ShardFailure?> PrepareAsync(int shard, string gid, CancellationToken cancellationToken)
    {
        var name = Set.NameOf(shard);
        try
        {
            await StepAsync(DistributedStep.PrepareShard, name).ConfigureAwait(false);
            await ExecuteEndingAsync(shard, PreparedSql("prepare transaction", gid), cancellationToken).ConfigureAwait(false);
            return null;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Whatever failed, the shard's transaction must not stay open on its session. If the PREPARE did happen (its
            // answer was lost), ROLLBACK PREPARED finishes it afterwards.
            await RollbackOnAsync(shard, CancellationToken.None).ConfigureAwait(false);
            return new ShardFailure(name, e is PostgresException pg ? Refusal(name, pg) : e);
        }
    }

    // Runs the statement that ends a shard's transaction (COMMIT or PREPARE TRANSACTION). PostgreSQL answers either one,
    // in a transaction that already failed, with a silent ROLLBACK instead of an error; a trivial statement just before
    // it, in the same round trip, raises "current transaction is aborted" instead.
    private async Task ExecuteEndingAsync(int shard, string sql, CancellationToken cancellationToken)
    {
        await ShardPipeline.RunAsync(Set, ShardConnectionSource.Given(_participants[shard]!), shard,
            ShardCommand.For(DistributedOperation, sql, isWrite: true), sql, static async (connection, sql, token) =>
            {
                var batch = new NpgsqlBatch(connection)
                {
                    BatchCommands =
                    {
                        new NpgsqlBatchCommand("select 1"),
                        new NpgsqlBatchCommand(sql),
                    },
                };
                await using var batchScope = batch.ConfigureAwait(false);
                return await batch.ExecuteNonQueryAsync(token).ConfigureAwait(false);
            }, async: true, cancellationToken).ConfigureAwait(false);
    }

    // What the caller is told when a shard's server refused to commit or prepare: nothing was committed anywhere.
    private static Exception Refusal(string shard, PostgresException error) => error switch
    {
        _ when PreparedTransactionsUnavailableException.Matches(error) => new PreparedTransactionsUnavailableException(shard, error),
        { SqlState: PostgresErrorCodes.InFailedSqlTransaction } => new ShardKitException(
            $"The transaction on shard '{shard}' had already failed (a command in it raised an error), so it was rolled back " +
            "there. Nothing was committed anywhere; fix the failing command and run the whole transaction again.", error),
        _ => error,
    };

    // Returns the shard's name when the commit is left to recovery.
    private async Task<string?> CommitPreparedAsync(int shard, string gid)
    {
        var name = Set.NameOf(shard);
        try
        {
            await StepAsync(DistributedStep.CommitPreparedShard, name).ConfigureAwait(false);
            await FinishPreparedAsync(shard, "commit prepared", gid).ConfigureAwait(false);
            return null;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            ShardKitLog.PreparedLeftForRecovery(Set.Logger, gid, name, e.GetType().Name);
            return name;
        }
    }

    private async Task RollbackPreparedAsync(IEnumerable<int> shards, string gid)
    {
        await Task.WhenAll(shards.Select(async shard =>
        {
            try
            {
                await FinishPreparedAsync(shard, "rollback prepared", gid).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // No commit decision exists, so recovery rolls it back once it is older than AbortPreparedAfter.
                ShardKitLog.PreparedLeftForRecovery(Set.Logger, gid, Set.NameOf(shard), e.GetType().Name);
            }
        })).ConfigureAwait(false);
    }

    // COMMIT/ROLLBACK PREPARED on the shard's own connection when it still works, else on a fresh one: a prepared
    // transaction belongs to no session. "Does not exist" means someone (recovery) already finished it the same way.
    private async Task FinishPreparedAsync(int shard, string verb, string gid)
    {
        var participant = _participants[shard];
        var source = participant is { State: System.Data.ConnectionState.Open } ? ShardConnectionSource.Given(participant) : ShardConnectionSource.Pooled;
        var sql = PreparedSql(verb, gid);
        try
        {
            await ShardPipeline.RunAsync(Set, source, shard, ShardCommand.For(DistributedOperation, sql, isWrite: true), sql,
                static async (connection, sql, _) =>
                {
                    var command = new NpgsqlCommand(sql, connection);
                    await using var commandScope = command.ConfigureAwait(false);
                    return await command.ExecuteNonQueryAsync().ConfigureAwait(false);
                }, async: true, CancellationToken.None).ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UndefinedObject)
        {
            // Already finished by recovery.
        }
    }

    internal static string PreparedSql(string verb, string gid) => verb + " '" + gid.Replace("'", "''", StringComparison.Ordinal) + "'";

    private const string DistributedOperation = "DistributedCommit";

    private Task StepAsync(DistributedStep step, string? shard) => _context.StepAsync(step, shard);

    private string[] NamesOf(int[] shards) => shards.Select(Set.NameOf).ToArray();
}

using Npgsql;

namespace ShardKit;

// The decision step of a two-phase commit: where the commit decision is recorded, and what the caller is told when
// it cannot be.
public sealed partial class DistributedTransaction
{
    // A coordinator connection already known broken lost its part with its session: nothing can commit there, which is
    // certain now, before anything is prepared (sent with the decision, the failure would leave the outcome in doubt).
    private ShardKitException? CoordinatorLost(int coordinator) => _participants[coordinator] is { State: System.Data.ConnectionState.Open }
        ? null
        : new ShardKitException(
            $"The connection to the coordinator shard '{Set.NameOf(coordinator)}' was lost inside the distributed transaction; its " +
            "work there is gone. Nothing was committed anywhere; run the whole transaction again.");

    // Makes sure the coordinator's decision log exists, once per data source; returns why it could not.
    private async Task<Exception?> EnsureDecisionLogAsync(int coordinator)
    {
        if (_context.DecisionLogReady)
        {
            return null;
        }

        try
        {
            await ShardPipeline.RunAsync(Set, ShardConnectionSource.Pooled, coordinator,
                ShardCommand.For(DistributedOperation, "create table if not exists " + DecisionLog.Table, isWrite: true), 0,
                static async (connection, _, token) =>
                {
                    await DecisionLog.EnsureAsync(connection, token).ConfigureAwait(false);
                    return 0;
                }, async: true, CancellationToken.None).ConfigureAwait(false);
            _context.DecisionLogReady = true;
            return null;
        }
        catch (Exception e) when (ShardErrors.FromShard(e))
        {
            return DecisionNotWritten(GlobalId!, coordinator, e);
        }
    }

    // Commits the coordinator's own part and records the decision in one round trip: the decision insert, then COMMIT,
    // on the coordinator's participant connection inside its still-open transaction. Returns null once committed, or
    // why nothing was (the coordinator's transaction is rolled back then). A server that refused answered; a connection
    // that broke did not, and then the COMMIT may or may not have happened: in doubt, for recovery to read from the log.
    private async Task<Exception?> CommitWithDecisionAsync(string gid, string[] names, int coordinator, System.Diagnostics.Activity? activity)
    {
        var name = Set.NameOf(coordinator);
        try
        {
            await ShardPipeline.RunAsync(Set, ShardConnectionSource.Given(_participants[coordinator]!), coordinator,
                ShardCommand.For(DistributedOperation, "insert into " + DecisionLog.Table + "; commit", isWrite: true) with { Once = true },
                (gid, names), static async (connection, s, _) =>
                {
                    var batch = new NpgsqlBatch(connection)
                    {
                        BatchCommands = { DecisionLog.CommitInTransaction(s.gid, s.names), new NpgsqlBatchCommand("commit") },
                    };
                    await using var batchScope = batch.ConfigureAwait(false);
                    return await batch.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
                }, async: true, CancellationToken.None).ConfigureAwait(false);
            return null;
        }
        catch (PostgresException e) when (!ShardErrors.IsConnectionFailure(e))
        {
            // The server refused (the insert failed, so the COMMIT after it never ran; or COMMIT itself failed, as a
            // deferred constraint can): nothing was committed there.
            await RollbackOnAsync(coordinator, CancellationToken.None).ConfigureAwait(false);
            if (e.SqlState == PostgresErrorCodes.UndefinedTable)
            {
                _context.DecisionLogReady = false; // dropped since it was checked: the next commit creates it again
            }

            return e switch
            {
                _ when DecisionLog.IsConflict(e) => AbortedByRecovery(gid),
                { SqlState: PostgresErrorCodes.InFailedSqlTransaction } => Refusal(name, e),
                _ when e.BatchCommand is { CommandText: "commit" } => Refusal(name, e),
                _ => DecisionNotWritten(gid, coordinator, e),
            };
        }
        catch (ShardUnavailableException e)
        {
            await RollbackOnAsync(coordinator, CancellationToken.None).ConfigureAwait(false);
            return DecisionNotWritten(gid, coordinator, e); // refused before anything was sent
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            await CloseParticipantAsync(coordinator).ConfigureAwait(false);
            _state = (int)Phase.InDoubt;
            ShardKitTelemetry.RecordOutcome(activity, "in_doubt");
            ShardKitLog.DistributedInDoubt(Set.Logger, gid, name, e);
            throw new DistributedTransactionInDoubtException(gid, names, name, e);
        }
    }

    // Writes the commit decision when the coordinator takes no part (it has nothing of its own to commit with it).
    // Writing it is idempotent (the primary key keeps one row per id and the row that is there is read back), so a
    // write whose result is unknown (the connection broke) is simply tried again on a fresh connection. Only a first
    // attempt the server itself refused proves nothing was decided; if no attempt gets an answer, the outcome is in
    // doubt until recovery reads the log. Returns null once committed, or why nothing was.
    private async Task<Exception?> DecideAsync(string gid, string[] names, int coordinator, System.Diagnostics.Activity? activity)
    {
        Exception? first = null;
        for (var attempt = 0; attempt < 3; attempt++)
        {
            try
            {
                var outcome = await ShardPipeline.RunAsync(Set, ShardConnectionSource.Pooled, coordinator,
                    ShardCommand.For(DistributedOperation, "insert into " + DecisionLog.Table, isWrite: true) with { Once = true }, (gid, names),
                    static (connection, s, _) => new ValueTask<string>(DecisionLog.RecordAsync(connection, s.gid, DecisionLog.Commit, s.names, CancellationToken.None)),
                    async: true, CancellationToken.None).ConfigureAwait(false);
                return outcome == DecisionLog.Commit ? null : AbortedByRecovery(gid);
            }
            catch (ShardUnavailableException e) when (attempt == 0)
            {
                return DecisionNotWritten(gid, coordinator, e); // the breaker refused before anything was sent: nothing was decided
            }
            catch (PostgresException e) when (attempt == 0 && !ShardErrors.IsConnectionFailure(e))
            {
                return DecisionNotWritten(gid, coordinator, e);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                first ??= e;
            }
        }

        _state = (int)Phase.InDoubt;
        ShardKitTelemetry.RecordOutcome(activity, "in_doubt");
        var coordinatorName = Set.NameOf(coordinator);
        ShardKitLog.DistributedInDoubt(Set.Logger, gid, coordinatorName, first!);
        throw new DistributedTransactionInDoubtException(gid, names, coordinatorName, first);
    }

    private ShardKitException DecisionNotWritten(string gid, int coordinator, Exception error) => new(
        $"Distributed transaction {gid} was rolled back: its commit decision could not be written to the coordinator shard " +
        $"'{Set.NameOf(coordinator)}' ({error.Message}). Nothing was committed; fix the cause (the role needs INSERT on " +
        $"{DecisionLog.Table}, and CREATE the first time unless the table exists) and retry.", error);

    private ShardKitException AbortedByRecovery(string gid) => new(
        $"Distributed transaction {gid} was rolled back: recovery found it prepared for longer than " +
        $"AbortPreparedAfter ({Settings.AbortPreparedAfter}) with no decision and aborted it. Nothing was committed; " +
        "retry, and raise DistributedTransactionOptions.AbortPreparedAfter if commits can legitimately take that long.");
}

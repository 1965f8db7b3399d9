using Npgsql;

namespace ShardKit;

/// <summary>
/// Finishes two-phase transactions a crash or an outage left prepared. One run: read the coordinator's decision log,
/// then every shard's ShardKit prepared transactions (in that order, see cleanup), then per global id: a commit decision
/// means <c>COMMIT PREPARED</c>; no decision and older than <c>AbortPreparedAfter</c> means write an abort decision and
/// <c>ROLLBACK PREPARED</c>; younger ids are left alone, their committer may still be writing its decision.
/// </summary>
/// <remarks>
/// Safe against a concurrent committer: recovery never rolls back without first inserting an <c>abort</c> row for the
/// id, and a committer never commits without first inserting its <c>commit</c> row. The decision table's primary key
/// lets exactly one of the two exist; each side reads back the row that won and acts on it, so a slow committer that
/// loses is told its transaction rolled back. Safe against itself: inserts are <c>on conflict do nothing</c>, and
/// finishing an id someone else finished ("prepared transaction does not exist") counts as done, and one another session
/// is finishing at that moment ("is busy") is left to it.
/// </remarks>
internal static class TransactionRecovery
{
    private const string PreparedSql =
        "select gid, extract(epoch from clock_timestamp() - prepared)::float8 from pg_prepared_xacts " +
        "where database = current_database() and gid like '" + GlobalTransactionId.Prefix + "%'";

    public static async Task<RecoveryReport> RunAsync(ShardSet source, DistributedSettings settings, CancellationToken cancellationToken)
    {
        var map = source.Map;
        var failures = new List<ShardFailure>();
        using var activity = ShardKitTelemetry.StartDistributed("recovery", map.ShardNames.Count);

        // Decisions first: a commit row read now whose id no shard holds prepared afterwards is finished for good.
        var decisions = await Attempt(source, settings.CoordinatorIndex, failures, async connection =>
            await DecisionLog.ReadAllAsync(connection, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);

        var perShard = await Task.WhenAll(Enumerable.Range(0, map.ShardNames.Count).Select(shard =>
            Attempt(source, shard, failures, connection => ReadPreparedAsync(connection, cancellationToken), cancellationToken))).ConfigureAwait(false);

        var pending = new Dictionary<string, List<(int Shard, TimeSpan Age)>>(StringComparer.Ordinal);
        for (var shard = 0; shard < perShard.Length; shard++)
        {
            foreach (var (gid, age) in perShard[shard] ?? [])
            {
                if (!pending.TryGetValue(gid, out var holders))
                {
                    pending[gid] = holders = [];
                }

                holders.Add((shard, age));
            }
        }

        int committed = 0, rolledBack = 0, skipped = 0;
        foreach (var group in pending.GroupBy(p => GlobalTransactionId.CoordinatorOf(p.Key)))
        {
            if (group.Key is null || !map.ShardNames.Contains(group.Key))
            {
                skipped += group.Count(); // coordinated by shards outside this map: not ours to decide
                continue;
            }

            var outcomes = await Attempt(source, map.IndexOf(group.Key), failures, async connection =>
            {
                var decided = await DecisionLog.ReadAsync(connection, group.Select(p => p.Key).ToArray(), cancellationToken).ConfigureAwait(false);
                foreach (var (gid, holders) in group)
                {
                    if (!decided.ContainsKey(gid) && holders.Max(h => h.Age) >= settings.AbortPreparedAfter)
                    {
                        var names = holders.Select(h => map.ShardNames[h.Shard]).ToArray();
                        decided[gid] = await DecisionLog.RecordAsync(connection, gid, DecisionLog.Abort, names, cancellationToken).ConfigureAwait(false);
                    }
                }

                return decided;
            }, cancellationToken).ConfigureAwait(false);

            foreach (var (gid, holders) in group)
            {
                if (outcomes is null || !outcomes.TryGetValue(gid, out var outcome))
                {
                    skipped++;
                    continue;
                }

                var commit = outcome == DecisionLog.Commit;
                var finished = await Task.WhenAll(holders.Select(h => Attempt(source, h.Shard, failures, async connection =>
                {
                    var command = new NpgsqlCommand(DistributedTransaction.PreparedSql(commit ? "commit prepared" : "rollback prepared", gid), connection);
                    await using var commandScope = command.ConfigureAwait(false);
                    try
                    {
                        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                    }
                    catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UndefinedObject)
                    {
                        // Finished meanwhile by its committer or another recovery run, the same way.
                    }
                    catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.ObjectNotInPrerequisiteState)
                    {
                        // "is busy": another session is finishing it right now, the same way; not ours to count.
                        return false;
                    }

                    return true;
                }, cancellationToken))).ConfigureAwait(false);
                if (!finished.Any(done => done))
                {
                    continue; // every holder failed; reported in Failures and left for the next run
                }

                var shardList = string.Join(", ", holders.Select(h => map.ShardNames[h.Shard]));
                if (commit)
                {
                    committed++;
                    ShardKitLog.RecoveryCommitted(source.Logger, gid, shardList);
                }
                else
                {
                    rolledBack++;
                    ShardKitLog.RecoveryRolledBack(source.Logger, gid, shardList);
                }
            }
        }

        var cleaned = decisions is null ? 0 : await CleanAsync(source, settings, decisions, pending, perShard, failures, cancellationToken).ConfigureAwait(false);
        ShardKitLog.RecoveryRun(source.Logger, committed, rolledBack, skipped, cleaned);
        return new RecoveryReport
        {
            Committed = committed,
            RolledBack = rolledBack,
            Skipped = skipped,
            DecisionsCleaned = cleaned,
            Failures = failures.DistinctBy(f => f.Shard).OrderBy(f => map.IndexOf(f.Shard)).ToArray(),
        };
    }

    // A commit row can go once none of its shards holds its id prepared (every one of them must have answered). An
    // abort row stays for AbortDecisionRetention: it is what stops a very late committer from recording a commit.
    private static async Task<int> CleanAsync(ShardSet source, DistributedSettings settings, List<DecisionRow> decisions,
        Dictionary<string, List<(int Shard, TimeSpan Age)>> pending, List<(string, TimeSpan)>?[] perShard, List<ShardFailure> failures,
        CancellationToken cancellationToken)
    {
        var map = source.Map;
        bool Answered(string shard) => map.ShardNames.Contains(shard) && perShard[map.IndexOf(shard)] is not null;
        var finished = decisions
            .Where(d => !pending.ContainsKey(d.Gid) && d.Shards.All(Answered)
                        && (d.Outcome == DecisionLog.Commit || d.Age >= settings.AbortDecisionRetention))
            .Select(d => d.Gid)
            .ToArray();
        if (finished.Length == 0)
        {
            return 0;
        }

        return await Attempt(source, settings.CoordinatorIndex, failures,
            connection => DecisionLog.DeleteAsync(connection, finished, cancellationToken), cancellationToken).ConfigureAwait(false);
    }

    private static async Task<List<(string, TimeSpan)>> ReadPreparedAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(PreparedSql, connection);
        await using var commandScope = command.ConfigureAwait(false);
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using var readerScope = reader.ConfigureAwait(false);
        var rows = new List<(string, TimeSpan)>();
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            rows.Add((reader.GetString(0), TimeSpan.FromSeconds(reader.GetDouble(1))));
        }

        return rows;
    }

    // Runs work on a fresh connection to one shard; a failure is recorded for the report and yields default.
    private static async Task<T?> Attempt<T>(ShardSet source, int shard, List<ShardFailure> failures,
        Func<NpgsqlConnection, Task<T>> work, CancellationToken cancellationToken)
    {
        try
        {
            return await ShardPipeline.RunAsync(source, ShardConnectionSource.Pooled, shard, ShardCommand.For("Recover", null, isWrite: true),
                work, static (connection, work, _) => new ValueTask<T>(work(connection)), async: true, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (ShardErrors.FromShard(e) && !cancellationToken.IsCancellationRequested)
        {
            var name = source.NameOf(shard);
            ShardKitLog.RecoveryShardFailed(source.Logger, name, e.GetType().Name, e);
            lock (failures)
            {
                failures.Add(new ShardFailure(name, e));
            }

            return default;
        }
    }
}

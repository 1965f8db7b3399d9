using System.Diagnostics;
using System.Globalization;
using Npgsql;
using NpgsqlTypes;

namespace ShardKit;

/// <summary>
/// Moves hash buckets from one shard to another while the app reads and writes, as a state machine the catalog
/// records (<see cref="MoveState"/>), so a crashed or stopped move resumes where it was:
/// preflight → slot and publication with an exported snapshot → chunked binary copy → catch-up from the slot until the
/// lag is under the gate → exact checksums of both sides on snapshots of one point of the source's history (verify) →
/// freeze of the moving buckets alone on the source (their ownership rows locked <c>for update</c>; their writers wait
/// inside PostgreSQL) → drain to the source's WAL position → compare the rows written since the snapshots → the source gives the buckets up
/// (epoch + 1) → the target takes them → the catalog switches and notifies → slot and publication dropped → the
/// source's copies deleted in throttled batches. Until the source gives the buckets up a move can be cancelled and
/// leaves nothing behind; after it, the switch is completed (never undone) on resume.
/// </summary>
internal sealed partial class BucketMover(ReshardingAdmin admin, MoveOptions options, IProgress<MoveProgress>? progress)
{
    private readonly Lock _reporting = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _estimate = -1;
    private ShardSet Shards => admin.Shards;

    public async Task<MoveResult> MoveAsync(IReadOnlyCollection<int> buckets, string target, CancellationToken cancellationToken)
    {
        var map = Shards.Map;
        var bucketMap = map.Buckets ?? throw new ShardMoveException(null, "Moving buckets needs hash sharding.");
        if (buckets.Count == 0 || buckets.Any(b => b < 0 || b >= bucketMap.Count) || buckets.Distinct().Count() != buckets.Count)
        {
            throw new ArgumentException($"Buckets must be distinct numbers from 0 to {bucketMap.Count - 1}, at least one.", nameof(buckets));
        }

        if (!map.Contains(target))
        {
            throw new ShardMoveException(null, $"There is no shard named '{target}'; the configured shards are: {string.Join(", ", map.ShardNames)}. " +
                "Add the new shard to every app's configuration first.");
        }

        await RefreshAsync(cancellationToken).ConfigureAwait(false);
        map = Shards.Map;
        if (map.Epoch == 0)
        {
            throw ReshardingAdmin.NotSeeded();
        }

        var sources = buckets.Select(b => map.Buckets!.ShardOfBucket(b)).Distinct().ToArray();
        if (sources.Length != 1)
        {
            throw new ShardMoveException(null, $"The buckets belong to {sources.Length} shards ({string.Join(", ", sources.Select(map.ShardNames.ElementAt))}); " +
                "move the buckets of one source shard at a time.");
        }

        var source = map.ShardNames[sources[0]];
        if (source == target)
        {
            throw new ShardMoveException(null, $"The buckets are on '{target}' already.");
        }

        var id = "m" + DateTime.UtcNow.ToString("yyyyMMddHHmmss", CultureInfo.InvariantCulture) + Guid.NewGuid().ToString("N")[..6];
        var ordered = buckets.Order().ToArray();
        var move = new MoveInfo(id, ordered, source, target, MoveState.Started, 0, null, null);
        // Before the catalog lists the buckets as moving: apps then name them to both fences (shardkit.check_owned). A
        // refusal here records nothing, so there is no move to cancel; a resumed run checks again.
        IReadOnlyList<MovedTable> moved;
        try
        {
            moved = await PreflightAsync(move, map.IndexOf(source), map.IndexOf(target), await admin.TablesAsync(cancellationToken).ConfigureAwait(false),
                cancellationToken).ConfigureAwait(false);
        }
        catch (ShardMoveException e) when (e.MoveId == id)
        {
            throw new ShardMoveException(null, e.Message + " Nothing was recorded or moved.", e.InnerException);
        }

        await RecordAloneAsync(id, ordered, source, target, cancellationToken).ConfigureAwait(false);
        await AnnounceAsync(cancellationToken).ConfigureAwait(false);
        var wait = options.AnnounceWait ?? FollowersCatchUp;
        ShardKitLog.MoveStep(Shards.Logger, id, "announced", string.Create(CultureInfo.InvariantCulture,
            $"waiting {wait.TotalMilliseconds:F0} ms for apps that follow the map to read that the buckets move"));
        await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
        return await RunAsync(move, cancellationToken, moved).ConfigureAwait(false);
    }

    public async Task<MoveResult> ResumeAsync(string moveId, CancellationToken cancellationToken)
    {
        var move = await ReadMoveAsync(moveId, cancellationToken).ConfigureAwait(false);
        if (move.State is MoveState.Done or MoveState.Cancelled)
        {
            throw new ShardMoveException(moveId, $"Move {moveId} is {move.State}; there is nothing to resume.");
        }

        return await RunAsync(move, cancellationToken).ConfigureAwait(false);
    }

    public async Task CancelAsync(string moveId, CancellationToken cancellationToken)
    {
        var move = await ReadMoveAsync(moveId, cancellationToken).ConfigureAwait(false);
        if (move.State is MoveState.Cancelled)
        {
            return;
        }

        EnsureCancellable(move, sourceOwns: move.State is MoveState.Switched or MoveState.Done
            || await SourceOwnsAsync(move, cancellationToken).ConfigureAwait(false));
        // The undoing runs under the move's run lock: a mover still running it (in this process or another) would
        // otherwise go on writing rows to the target after they were deleted, and leave them on two shards.
        var guard = await admin.Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = guard.ConfigureAwait(false);
        var targetCs = Shards.ShardAt(Shards.Map.IndexOf(move.Target)).ConnectionString;
        var marked = false;
        try
        {
            if (!await TryLockRunAsync(guard, moveId).ConfigureAwait(false))
            {
                // The mover reads this when it stops, and says it was cancelled rather than to resume.
                // Not on a move another cancel finished meanwhile (it held the lock, not a mover).
                await ExecuteCatalogAsync("update shardkit.move set error = $2, updated = now() where id = $1 and state not in ('Cancelled', 'Done')",
                    cancellationToken, moveId, CancelRequested).ConfigureAwait(false);
                marked = true;
                await StopRunningMoverAsync(move, guard, targetCs, cancellationToken).ConfigureAwait(false);
            }
        }
        catch when (marked)
        {
            await ClearCancelMarkAsync(moveId).ConfigureAwait(false);
            throw;
        }

        try
        {
            // Read again under the lock: the mover may have switched the buckets before it stopped.
            move = await ReadMoveAsync(moveId, cancellationToken).ConfigureAwait(false);
            if (move.State is MoveState.Cancelled)
            {
                if (marked)
                {
                    await ClearCancelMarkAsync(moveId).ConfigureAwait(false);
                }

                return;
            }

            EnsureCancellable(move, await SourceOwnsAsync(move, cancellationToken).ConfigureAwait(false));
            await UndoCopyAsync(move, cancellationToken).ConfigureAwait(false);
            await ExecuteCatalogAsync("update shardkit.move set state = 'Cancelled', error = null, updated = now() where id = $1", cancellationToken, moveId)
                .ConfigureAwait(false);
            ShardKitLog.MoveStep(Shards.Logger, moveId, nameof(MoveState.Cancelled), "recorded");
            await AnnounceAsync(cancellationToken).ConfigureAwait(false);
        }
        catch when (marked)
        {
            await ClearCancelMarkAsync(moveId).ConfigureAwait(false);
            throw;
        }
        finally
        {
            await UnlockRunAsync(guard, moveId).ConfigureAwait(false);
        }
    }

    // In Switching the source may still own the buckets (the freeze failed, or the mover stopped before giving them up).
    private static void EnsureCancellable(MoveInfo move, bool sourceOwns)
    {
        if (move.State is MoveState.Switched or MoveState.Done || !sourceOwns)
        {
            throw new ShardMoveException(move.MoveId, $"Move {move.MoveId} has switched its buckets to '{move.Target}' already ({move.State}); " +
                "it cannot be cancelled. Resume it to finish, then move the buckets back if you want them on " + $"'{move.Source}'.");
        }
    }

    // How long a cancel waits for a mover that runs the move to stop once its stream and target sessions are ended.
    private static readonly TimeSpan RunningMoverStopWait = TimeSpan.FromSeconds(30);

    // Drops the move's slot and publication, then deletes its copies on the target and its chunk records: a cancel and
    // a restarted copy start from here. Only under the run lock and while the source owns the buckets. The lock is no
    // proof that nothing writes (a mover whose catalog connection broke lost the lock with it and may still run): the
    // move's working target sessions end first, and the delete waits until they are gone.
    private async Task UndoCopyAsync(MoveInfo move, CancellationToken cancellationToken)
    {
        await BucketReplication.DropAsync(Shards.ShardAt(Shards.Map.IndexOf(move.Source)).ConnectionString, move.MoveId, cancellationToken)
            .ConfigureAwait(false);
        var targetIndex = Shards.Map.IndexOf(move.Target);
        await EndTargetSessionsAsync(move, Shards.ShardAt(targetIndex).ConnectionString, cancellationToken).ConfigureAwait(false);
        await DeleteRowsAsync(targetIndex, move.Buckets, await admin.TablesAsync(cancellationToken).ConfigureAwait(false), cancellationToken)
            .ConfigureAwait(false);
        await ExecuteCatalogAsync("delete from shardkit.move_chunk where move_id = $1", cancellationToken, move.MoveId).ConfigureAwait(false);
    }

    // A mover runs the move: its slot goes (its stream ends) and its target sessions end (its copy or catch-up fails at
    // the next row), then the cancel waits for it to let go of the run lock. Sessions it opens meanwhile end too. A
    // mover that switches the buckets meanwhile makes the cancel fail at once.
    private async Task StopRunningMoverAsync(MoveInfo move, NpgsqlConnection guard, string targetCs, CancellationToken cancellationToken)
    {
        var sourceCs = Shards.ShardAt(Shards.Map.IndexOf(move.Source)).ConnectionString;
        await BucketReplication.DropAsync(sourceCs, move.MoveId, cancellationToken).ConfigureAwait(false);
        var waited = Stopwatch.StartNew();
        var ended = true;
        for (var round = 0; ; round++)
        {
            ended &= await TryEndTargetSessionsAsync(move.MoveId, targetCs, cancellationToken).ConfigureAwait(false);
            if (await TryLockRunAsync(guard, move.MoveId).ConfigureAwait(false))
            {
                ShardKitLog.MoveStep(Shards.Logger, move.MoveId, "cancel", string.Create(CultureInfo.InvariantCulture,
                    $"the mover that ran the move stopped after {waited.ElapsedMilliseconds} ms"));
                return;
            }

            if (round % 5 == 4 && await ReadMoveAsync(move.MoveId, cancellationToken).ConfigureAwait(false) is { State: MoveState.Switched or MoveState.Done } now)
            {
                EnsureCancellable(now, sourceOwns: false);
            }

            if (waited.Elapsed > RunningMoverStopWait)
            {
                throw new ShardMoveException(move.MoveId, string.Create(CultureInfo.InvariantCulture,
                    $"Move {move.MoveId} is still running in another mover {RunningMoverStopWait.TotalSeconds:F0} s after its slot was dropped") +
                    (ended ? " and its sessions on the target were ended" : " (this role may not end its sessions on the target: grant it pg_signal_backend)") +
                    "; no rows were deleted. Stop that mover (cancel its token, or stop its process), then cancel again (a resume instead " +
                    "copies again from a new slot).");
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }
    }

    // Ends the move's target sessions that are working (an idle one waits in a pool: ending it would break that pool's
    // next command) and waits up to 5 s until none is left.
    private async Task EndTargetSessionsAsync(MoveInfo move, string targetCs, CancellationToken cancellationToken)
    {
        for (var round = 0; round < 50; round++)
        {
            var working = await BucketReplication.EndTargetSessionsAsync(targetCs, move.MoveId, cancellationToken).ConfigureAwait(false);
            if (working == 0)
            {
                return;
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }

        throw new ShardMoveException(move.MoveId, $"Move {move.MoveId}'s sessions on '{move.Target}' (application_name " +
            $"'{BucketReplication.MoverSessionName(move.MoveId)}') did not end within 5 s; nothing was deleted. End them, then cancel again.");
    }

    // One round of ending the move's working target sessions; false when this role may not end them. A broken connection
    // of this round is tried again in the next.
    private static async Task<bool> TryEndTargetSessionsAsync(string moveId, string targetCs, CancellationToken cancellationToken)
    {
        try
        {
            await BucketReplication.EndTargetSessionsAsync(targetCs, moveId, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.InsufficientPrivilege)
        {
            // Another role's mover: its stream ended with the slot; its copy goes on until the last scan.
            return false;
        }
        catch (NpgsqlException) when (!cancellationToken.IsCancellationRequested)
        {
            return true;
        }
    }

    // The error a cancel records on a move while it stops the mover that runs it.
    private const string CancelRequested = "CancelMoveAsync: cancel requested while a mover ran the move";

    // A cancel that failed leaves no mark: the mover's later errors are its own.
    private async Task ClearCancelMarkAsync(string moveId)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await ExecuteCatalogAsync("update shardkit.move set error = null where id = $1 and error = $2", timeout.Token, moveId, CancelRequested)
                .ConfigureAwait(false);
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is OperationCanceledException)
        {
            // The catalog does not answer: the mark stays until the next state.
        }
    }

    // Whether a cancel is stopping this run (see StopRunningMoverAsync); false when the catalog does not answer.
    private async Task<bool> CancelRequestedAsync(string moveId)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            return await ReadMoveAsync(moveId, timeout.Token).ConfigureAwait(false) is { Error: CancelRequested, State: not (MoveState.Switched or MoveState.Done) };
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is OperationCanceledException or ShardMoveException)
        {
            return false;
        }
    }

    // Without the caller's token: a cancel that landed after the server granted the lock would return the connection to
    // its pool holding it.
    private static async Task<bool> TryLockRunAsync(NpgsqlConnection guard, string moveId)
    {
        var tryLock = new NpgsqlCommand($"select pg_try_advisory_lock({MoveRunLockClass}, hashtext($1))", guard);
        await using (tryLock.ConfigureAwait(false))
        {
            tryLock.Parameters.Add(new NpgsqlParameter<string> { TypedValue = moveId });
            return await tryLock.ExecuteScalarAsync(CancellationToken.None).ConfigureAwait(false) is true;
        }
    }

    private static async Task UnlockRunAsync(NpgsqlConnection guard, string moveId)
    {
        try
        {
            var unlock = new NpgsqlCommand($"select pg_advisory_unlock({MoveRunLockClass}, hashtext($1))", guard);
            await using (unlock.ConfigureAwait(false))
            {
                unlock.Parameters.Add(new NpgsqlParameter<string> { TypedValue = moveId });
                await unlock.ExecuteScalarAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is InvalidOperationException)
        {
            // The catalog's connection broke: the server let go of the lock with it.
        }
    }

    // How long until every app following the map has read a new one even without the notification: two of this data
    // source's check intervals (MoveOptions.AnnounceWait and CleanupDelay by default).
    private TimeSpan FollowersCatchUp => 2 * (Shards.Follower?.CheckInterval ?? StoredMapOptions.DefaultCheckInterval);

    // A new epoch with the same owners: followers read whether a move is under way (fan-outs then filter copies).
    private Task AnnounceAsync(CancellationToken cancellationToken) => ExecuteCatalogAsync($"""
        update shardkit.map set epoch = epoch + 1, updated = now();
        select pg_notify('{StoredMapCatalog.Channel}', (select epoch::text from shardkit.map));
        """, cancellationToken);

    // One mover per move at a time: a session lock on the catalog held while it runs (a mover that dies lets go with its
    // connection). A second run of the same move (ResumeMoveAsync here or in another process) is refused, not raced.
    // preflighted: the tables as the preflight just described them (a new move); null: run the preflight.
    private async Task<MoveResult> RunAsync(MoveInfo move, CancellationToken cancellationToken, IReadOnlyList<MovedTable>? preflighted = null)
    {
        var guard = await admin.Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = guard.ConfigureAwait(false);
        if (!await TryLockRunAsync(guard, move.MoveId).ConfigureAwait(false))
        {
            throw new ShardMoveException(move.MoveId, $"Move {move.MoveId} is running in another mover right now (this process or " +
                "another), or a cancel of it is; nothing was done. Wait for it to end (GetMovesAsync, `shardkit move list`), or stop it " +
                "(cancel its token, or stop its process) and resume it then; CancelMoveAsync stops it and undoes the move.");
        }

        try
        {
            // A cancel may have undone the move, or another mover finished it, since it was read.
            var current = await ReadMoveAsync(move.MoveId, cancellationToken).ConfigureAwait(false);
            if (current.State is MoveState.Done or MoveState.Cancelled)
            {
                throw new ShardMoveException(move.MoveId, $"Move {move.MoveId} is {current.State}; there is nothing to run.");
            }

            return await RunStepsAsync(current, cancellationToken, preflighted).ConfigureAwait(false);
        }
        finally
        {
            await UnlockRunAsync(guard, move.MoveId).ConfigureAwait(false);
        }
    }

    // The class of the advisory lock a running move holds (its second key is the hash of the move's id).
    private const int MoveRunLockClass = 0x53_484B; // "SHK"

    // The state machine from wherever the catalog says the move is.
    private async Task<MoveResult> RunStepsAsync(MoveInfo move, CancellationToken cancellationToken, IReadOnlyList<MovedTable>? preflighted = null)
    {
        var sourceIndex = Shards.Map.IndexOf(move.Source);
        var targetIndex = Shards.Map.IndexOf(move.Target);
        var sourceCs = Shards.ShardAt(sourceIndex).ConnectionString;
        var targetCs = Shards.ShardAt(targetIndex).ConnectionString;
        var bucketCount = Shards.Map.Buckets!.Count;
        var state = move.State;
        var rowsCopied = move.RowsCopied;
        var pause = move.PauseMs is { } ms ? TimeSpan.FromMilliseconds(ms) : TimeSpan.Zero;
        try
        {
            // A new move was checked just before it was recorded (the check re-creates the fences' procedures, which
            // every backend then compiles again: once, not twice); a resumed one is checked here.
            var moved = preflighted ?? await PreflightAsync(move, sourceIndex, targetIndex, await admin.TablesAsync(cancellationToken).ConfigureAwait(false),
                cancellationToken).ConfigureAwait(false);
            if (state is MoveState.Started or MoveState.Copying or MoveState.CatchingUp)
            {
                if (state is MoveState.Started)
                {
                    // Nothing of this move may exist yet; a crash between creating the slot and recording it left one.
                    await BucketReplication.DropAsync(sourceCs, move.MoveId, cancellationToken).ConfigureAwait(false);
                }

                BucketReplication replication;
                if (state is MoveState.Started)
                {
                    replication = await BucketReplication.StartAsync(sourceCs, move.MoveId, moved, cancellationToken, move.Buckets, bucketCount).ConfigureAwait(false);
                }
                else
                {
                    try
                    {
                        // A slot whose WAL the source cannot decode fails the same way on every resume: a new one is made.
                        if (move.Error is { } last && last.Contains(UndecodableText, StringComparison.Ordinal))
                        {
                            await BucketReplication.DropAsync(sourceCs, move.MoveId, cancellationToken).ConfigureAwait(false);
                        }

                        replication = await BucketReplication.ResumeAsync(sourceCs, move.MoveId, moved, cancellationToken).ConfigureAwait(false);
                    }
                    catch (BucketMoveException e) when (e.SlotGone)
                    {
                        // The slot is gone (a cancel that gave up dropped it, or it was undecodable): the source still owns
                        // the buckets, so the move starts its copy again from a new slot, on a target cleared of its copies.
                        ShardKitLog.MoveStep(Shards.Logger, move.MoveId, "restart", $"the slot on '{move.Source}' is gone or undecodable: the copy starts again");
                        await UndoCopyAsync(move, cancellationToken).ConfigureAwait(false);
                        await ExecuteCatalogAsync("update shardkit.move set rows_copied = 0 where id = $1", cancellationToken, move.MoveId).ConfigureAwait(false);
                        await SetStateAsync(move.MoveId, MoveState.Started, cancellationToken).ConfigureAwait(false);
                        state = MoveState.Started;
                        rowsCopied = 0;
                        replication = await BucketReplication.StartAsync(sourceCs, move.MoveId, moved, cancellationToken, move.Buckets, bucketCount)
                            .ConfigureAwait(false);
                    }
                }

                await using (replication.ConfigureAwait(false))
                {
                    ShardKitLog.MoveStep(Shards.Logger, move.MoveId, "replication", state is MoveState.Started
                        ? $"slot and publication {replication.SlotName} created on '{move.Source}'"
                        : $"slot and publication {replication.SlotName} taken up on '{move.Source}'");
                    if (state is MoveState.Started or MoveState.Copying)
                    {
                        state = await SetStateAsync(move.MoveId, MoveState.Copying, cancellationToken).ConfigureAwait(false);
                        var done = await DoneChunksAsync(move.MoveId, cancellationToken).ConfigureAwait(false);
                        _estimate = await EstimateRowsAsync(sourceIndex, moved, move.Buckets.Count, bucketCount, cancellationToken).ConfigureAwait(false);
                        var copiedBefore = rowsCopied;
                        var copied = new CopyProgress(rows => Report(move.MoveId, MoveState.Copying, copiedBefore + rows, -1, null));
                        var perScan = await BucketsPerScanAsync(sourceIndex, moved, bucketCount, cancellationToken).ConfigureAwait(false);
                        replication.CopyRowsPerSecond = options.CopyRowsPerSecond;
                        await replication.CopyAsync(targetCs, move.Buckets, bucketCount, options.Parallelism,
                            (table, bucket) => done.Contains((table, bucket)),
                            (table, chunks, token) => ChunksDoneAsync(move.MoveId, table, chunks, token), copied, perScan, cancellationToken).ConfigureAwait(false);
                        rowsCopied = await RowsCopiedAsync(move.MoveId, cancellationToken).ConfigureAwait(false);
                        state = await SetStateAsync(move.MoveId, MoveState.CatchingUp, cancellationToken).ConfigureAwait(false);
                    }

                    await CatchUpUnderGateAsync(move, replication, sourceIndex, targetCs, bucketCount, rowsCopied, cancellationToken).ConfigureAwait(false);
                    Report(move.MoveId, MoveState.Switching, rowsCopied, 0, null); // the verify and the freeze follow
                    pause = await FreezeAndSwitchAsync(move, replication, moved, sourceIndex, targetIndex, targetCs, bucketCount, cancellationToken)
                        .ConfigureAwait(false);
                    state = MoveState.Switched;
                }
            }
            else if (state is MoveState.Switching)
            {
                // The source may have given the buckets up before the crash: finish the switch; otherwise go back to catching up.
                if (await SourceOwnsAsync(move, cancellationToken).ConfigureAwait(false))
                {
                    await SetStateAsync(move.MoveId, MoveState.CatchingUp, cancellationToken).ConfigureAwait(false);
                    return await RunStepsAsync(move with { State = MoveState.CatchingUp }, cancellationToken).ConfigureAwait(false);
                }

                // The source gives the buckets up before the target's side of the comparison is in (the freeze's last round
                // trip): compare every row again before the target takes them. Not once the target took them (the mover
                // stopped between the target's commit and the catalog's switch): writers may have written there since.
                var gaveUpAt = await SourceEpochAsync(move, cancellationToken).ConfigureAwait(false);
                if (options.Verify && !await TargetOwnsAsync(move, targetIndex, gaveUpAt, cancellationToken).ConfigureAwait(false))
                {
                    await VerifyEveryRowAsync(move, moved, targetCs, bucketCount, gaveUpAt, cancellationToken).ConfigureAwait(false);
                }

                await CompleteSwitchAsync(move, targetIndex, gaveUpAt, cancellationToken).ConfigureAwait(false);
                await RefreshAsync(cancellationToken).ConfigureAwait(false);
                state = MoveState.Switched;
            }
            else if (state is MoveState.Switched && await SourceEpochAsync(move, cancellationToken).ConfigureAwait(false) is var gaveUpAt and >= 0)
            {
                // The switch commits the target's taking over and the catalog's naming it at once: a mover stopped between
                // the two may have left the catalog switched and the target not yet owning the buckets.
                await TakeOnTargetAsync(move, targetIndex, gaveUpAt, cancellationToken).ConfigureAwait(false);
            }

            // Switched: the slot goes first (the deletions below must not stream to anyone), then the source's copies.
            await BucketReplication.DropAsync(sourceCs, move.MoveId, cancellationToken).ConfigureAwait(false);
            Report(move.MoveId, MoveState.Switched, rowsCopied, 0, pause);
            await Task.Delay(options.CleanupDelay ?? FollowersCatchUp, cancellationToken).ConfigureAwait(false);
            await DeleteRowsAsync(sourceIndex, move.Buckets, await admin.TablesAsync(cancellationToken).ConfigureAwait(false), cancellationToken)
                .ConfigureAwait(false);
            await SetStateAsync(move.MoveId, MoveState.Done, cancellationToken).ConfigureAwait(false);
            await AnnounceAsync(cancellationToken).ConfigureAwait(false);
            await RefreshAsync(cancellationToken).ConfigureAwait(false);
            Report(move.MoveId, MoveState.Done, rowsCopied, 0, pause);
            return new MoveResult(move.MoveId, move.Buckets, move.Source, move.Target, rowsCopied, pause, _clock.Elapsed, Shards.Map.Epoch);
        }
        catch (Exception e) when (e is not ShardMoveException && (ShardErrors.FromShard(e) || e is OperationCanceledException))
        {
            if (!cancellationToken.IsCancellationRequested && await CancelRequestedAsync(move.MoveId).ConfigureAwait(false))
            {
                throw new ShardMoveException(move.MoveId, $"Move {move.MoveId} of buckets {Describe(move.Buckets)} from '{move.Source}' to " +
                    $"'{move.Target}' was cancelled while {state} (CancelMoveAsync ended its sessions); the cancel undoes it: the buckets " +
                    $"stay on '{move.Source}'.", e);
            }

            // The undecodable error is recorded in words the next resume finds (it may be wrapped).
            await TryRecordErrorAsync(move.MoveId, e, UndecodableTable(e) ? UndecodableText + " (decoding): " : "").ConfigureAwait(false);
            if (e is OperationCanceledException)
            {
                throw;
            }

            if (UndecodableTable(e))
            {
                // The slot's WAL holds a change the source's decoding cannot name: replaying it fails the same way each time.
                throw new ShardMoveException(move.MoveId, $"Move {move.MoveId} of buckets {Describe(move.Buckets)} from '{move.Source}' to " +
                    $"'{move.Target}' stopped while {state}: the source's logical decoding cannot read its WAL past a change to a table it " +
                    $"cannot name ({e.Message}), which PostgreSQL's decoding can leave behind when a table is created on the source while " +
                    $"the move's slot exists. Resume it with ResumeMoveAsync(\"{move.MoveId}\") (`shardkit move resume`): the resume drops that " +
                    "slot and copies again from a new one; create no tables on the source meanwhile. Or cancel it.", e);
            }

            if (SlotGone(e))
            {
                throw new ShardMoveException(move.MoveId, $"Move {move.MoveId} of buckets {Describe(move.Buckets)} from '{move.Source}' to " +
                    $"'{move.Target}' stopped while {state}: its replication slot on '{move.Source}' is gone (a cancel drops it) ({e.Message}). " +
                    $"Resume it with ResumeMoveAsync(\"{move.MoveId}\") (`shardkit move resume`) to copy again from a new slot, or cancel it.", e);
            }

            var then = Deterministic(e)
                ? "A resume fails the same way until that is fixed (a privilege, a definition the server refuses): fix it, then resume it with " +
                  $"ResumeMoveAsync(\"{move.MoveId}\") (`shardkit move resume`), or cancel it."
                : $"Resume it with ResumeMoveAsync(\"{move.MoveId}\") (`shardkit move resume`) or cancel it.";
            throw new ShardMoveException(move.MoveId, $"Move {move.MoveId} of buckets {Describe(move.Buckets)} from '{move.Source}' to " +
                $"'{move.Target}' stopped while {state}: {e.Message} {then}", e);
        }
    }

    // The start of PostgreSQL's "could not map filenode/filenumber" in a move's recorded error.
    private const string UndecodableText = "could not map file";

    // The move's slot is gone: the source says it does not exist, or a resume found it missing.
    internal static bool SlotGone(Exception e) => AnyInner(e, inner => inner is BucketMoveException { SlotGone: true }
        || inner is PostgresException { SqlState: PostgresErrorCodes.UndefinedObject } p && p.MessageText.StartsWith("replication slot", StringComparison.Ordinal));

    // Whether the error or one it wraps passes the test.
    private static bool AnyInner(Exception e, Func<Exception, bool> test)
    {
        for (var inner = e; inner is not null; inner = inner.InnerException)
        {
            if (test(inner))
            {
                return true;
            }
        }

        return false;
    }

    // An error the server gives again for the same statement: a missing privilege or object, a refused definition or
    // feature (SQLSTATE classes 42 and 0A), not a broken connection, a lock or a shutdown.
    internal static bool Deterministic(Exception e)
    {
        for (var inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is PostgresException p)
            {
                return p.SqlState.StartsWith("42", StringComparison.Ordinal) && p.SqlState != PostgresErrorCodes.UndefinedObject
                       || p.SqlState.StartsWith("0A", StringComparison.Ordinal);
            }
        }

        return false;
    }

    // PostgreSQL's "could not map filenode … to relation OID" (15; "filenumber" from 16) from the source's logical
    // decoding: an internal error, raised untranslated.
    internal static bool UndecodableTable(Exception e) => AnyInner(e, inner =>
        inner is PostgresException { SqlState: PostgresErrorCodes.InternalError } p && p.MessageText.StartsWith(UndecodableText, StringComparison.Ordinal));

    private async Task CatchUpUnderGateAsync(MoveInfo move, BucketReplication replication, int sourceIndex, string targetCs, int bucketCount,
        long rowsCopied, CancellationToken cancellationToken)
    {
        for (var round = 0; round < 50; round++)
        {
            var until = await CurrentLsnAsync(sourceIndex, cancellationToken).ConfigureAwait(false);
            var started = Stopwatch.GetTimestamp();
            await replication.CatchUpAsync(targetCs, move.Buckets, bucketCount, until, cancellationToken).ConfigureAwait(false);
            var now = await CurrentLsnAsync(sourceIndex, cancellationToken).ConfigureAwait(false);
            var lag = (long)(ulong)(now - until);
            Report(move.MoveId, MoveState.CatchingUp, rowsCopied, lag, null);
            // Under the gate, or one round was quick: the frozen drain will be short.
            if (lag <= options.MaxLagBytes || Stopwatch.GetElapsedTime(started) < TimeSpan.FromMilliseconds(50))
            {
                return;
            }
        }
    }

    // The target takes the buckets, then the catalog names it and notifies (the source gave them up before).
    private async Task CompleteSwitchAsync(MoveInfo move, int targetIndex, long epoch, CancellationToken cancellationToken)
    {
        await TakeOnTargetAsync(move, targetIndex, epoch, cancellationToken).ConfigureAwait(false);
        await ExecuteCatalogAsync(SwitchCatalogSql, cancellationToken, move.Buckets.ToArray(), move.Target, move.MoveId).ConfigureAwait(false);
    }

    // The target owns the buckets at the epoch the source gave them up with. Idempotent, and it never takes back what a
    // later move took from the target (a higher epoch there).
    private async Task TakeOnTargetAsync(MoveInfo move, int targetIndex, long epoch, CancellationToken cancellationToken)
    {
        var target = await Shards.DataSourceAt(targetIndex).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (target.ConfigureAwait(false))
        {
            await ReshardingAdmin.ExecuteAsync(target, "select set_config('synchronous_commit', 'on', false)", cancellationToken).ConfigureAwait(false);
            var take = new NpgsqlCommand("update shardkit.bucket_owner set owned = true, epoch = $2, moved_to = null where bucket = any($1) and epoch <= $2", target);
            await using (take.ConfigureAwait(false))
            {
                take.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = move.Buckets.ToArray() });
                take.Parameters.Add(new NpgsqlParameter<long> { TypedValue = epoch });
                await take.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }

    // The catalog names the target ($2) of the buckets ($1), records move $3 switched, and notifies. The map's epoch goes
    // first: its row lock orders switches of disjoint moves, so each bucket gets the epoch its own switch made (read
    // before the lock, two switches at once gave their buckets the same one).
    internal const string SwitchCatalogSql = $"""
        update shardkit.map set epoch = epoch + 1, updated = now();
        update shardkit.map_bucket set shard = $2, epoch = (select epoch from shardkit.map) where bucket = any($1);
        update shardkit.move set state = 'Switched', updated = now() where id = $3;
        select pg_notify('{StoredMapCatalog.Channel}', (select epoch::text from shardkit.map));
        """;

    // A fence made by an older ShardKit gets this one's column and procedures (the triggers stay as seeded): the switch
    // records where the buckets went, and reads of the moving buckets name them (shardkit.check_owned). Nothing where
    // there is no fence (the preflight refuses that below). One implicit transaction: the lock holds to its end.
    private static Task UpgradeFencesAsync(MoveInfo move, NpgsqlConnection source, NpgsqlConnection target, CancellationToken cancellationToken) =>
        Task.WhenAll(UpgradeFenceAsync(move, source, move.Source, cancellationToken), UpgradeFenceAsync(move, target, move.Target, cancellationToken));

    private static async Task UpgradeFenceAsync(MoveInfo move, NpgsqlConnection connection, string shard, CancellationToken cancellationToken)
    {
        // Only a fence of another version (or missing a part) is re-created: the writers of the shard would each compile
        // the new procedures again.
        var state = new NpgsqlCommand(FenceSql.FenceState, connection);
        await using (state.ConfigureAwait(false))
        {
            if (await state.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is not 2)
            {
                return;
            }
        }

        try
        {
            await ReshardingAdmin.ExecuteAsync(connection, $"select pg_advisory_xact_lock({ReshardingAdmin.LockKey});\n{FenceSql.Functions}",
                cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.LockNotAvailable)
        {
            throw new ShardMoveException(move.MoveId, $"The fence on '{shard}' predates shardkit.bucket_owner.moved_to, and adding the column did " +
                $"not get the table's lock within {FenceSql.UpgradeLockTimeoutMs} ms (a long or prepared transaction holds bucket rows; see " +
                "pg_prepared_xacts and pg_locks). Resolve it, or run SeedAsync at a quieter moment, then run the move again.", e);
        }
    }

    private async Task<IReadOnlyList<MovedTable>> PreflightAsync(MoveInfo move, int sourceIndex, int targetIndex, IReadOnlyList<ShardedTable> tables,
        CancellationToken cancellationToken)
    {
        if (tables.Count == 0)
        {
            throw new ShardMoveException(move.MoveId, "The catalog lists no sharded tables; seed it with the tables whose rows move (SeedAsync).");
        }

        var moved = new List<MovedTable>();
        var source = await Shards.DataSourceAt(sourceIndex).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = source.ConfigureAwait(false);
        var target = await Shards.DataSourceAt(targetIndex).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var __ = target.ConfigureAwait(false);
        // The switch records on both fences where the buckets went (fences made by an older ShardKit lack the column); a
        // move an older mover started gets this version's fence on resuming.
        await UpgradeFencesAsync(move, source, target, cancellationToken).ConfigureAwait(false);
        // No table may be created on the source while its slot decodes: PostgreSQL 15's decoding can then miss that the
        // creating transaction changed the catalog, and stop for good at the new table's first row with "could not map
        // filenode … to relation OID" (a resume replays the same WAL). The two-phase commit decision log is the table
        // ShardKit itself creates on first use, from an app's writer: it is made here, before the slot, on both sides.
        await EnsureDecisionLogAsync(move, source, move.Source, cancellationToken).ConfigureAwait(false);
        await EnsureDecisionLogAsync(move, target, move.Target, cancellationToken).ConfigureAwait(false);
        foreach (var table in tables)
        {
            var onSource = await DescribeOnAsync(move, source, move.Source, table, cancellationToken).ConfigureAwait(false);
            var onTarget = await DescribeOnAsync(move, target, move.Target, table, cancellationToken).ConfigureAwait(false);
            // Names, types and the primary key: a binary COPY of an int column into a bigint one fails midway.
            if (!onSource.Columns.SequenceEqual(onTarget.Columns) || !onSource.ColumnTypes.SequenceEqual(onTarget.ColumnTypes)
                || !onSource.PrimaryKey.SequenceEqual(onTarget.PrimaryKey))
            {
                throw new ShardMoveException(move.MoveId, $"Table {table.Table} differs between '{move.Source}' ({Describe(onSource)}) and " +
                    $"'{move.Target}' ({Describe(onTarget)}); migrate the target to the same schema first.");
            }

            foreach (var (connection, name) in new[] { (source, move.Source), (target, move.Target) })
            {
                if (await CountTriggersAsync(connection, table.Table, cancellationToken).ConfigureAwait(false) < 3)
                {
                    throw new ShardMoveException(move.MoveId, $"Table {table.Table} on '{name}' has no ownership fence; run SeedAsync (or " +
                        "AddShardAsync for a new shard) so writes on an old map cannot land on the wrong shard.");
                }
            }

            moved.Add(onSource);
        }

        return moved;
    }

    // A role without CREATE there leaves it to the apps, as before (the move goes on; the hazard is rare and named).
    private async Task EnsureDecisionLogAsync(MoveInfo move, NpgsqlConnection connection, string shard, CancellationToken cancellationToken)
    {
        try
        {
            await DecisionLog.EnsureAsync(connection, cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.InsufficientPrivilege)
        {
            ShardKitLog.DecisionLogNotCreated(Shards.Logger, move.MoveId, shard, e.SqlState);
        }
    }

    private static async Task<MovedTable> DescribeOnAsync(MoveInfo move, NpgsqlConnection connection, string shard, ShardedTable table,
        CancellationToken cancellationToken)
    {
        try
        {
            return await MovedTables.DescribeAsync(connection, table.Table, table.KeyColumn, cancellationToken).ConfigureAwait(false);
        }
        catch (BucketMoveException e)
        {
            throw new ShardMoveException(move.MoveId, $"On '{shard}': {e.Message}", e);
        }
    }

    // Columns with their types, then the primary key: "id bigint, n integer; primary key (id)".
    private static string Describe(MovedTable table) =>
        string.Join(", ", table.Columns.Select((c, i) => $"{c} {table.ColumnTypes[i]}")) + $"; primary key ({string.Join(", ", table.PrimaryKey)})";

    private static async Task<int> CountTriggersAsync(NpgsqlConnection connection, string table, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(FenceSql.CountTriggers, connection);
        await using var _ = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = table });
        return (int)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    // The tables that hold the rows of table: itself, or a partitioned table's leaf partitions (schema-qualified, quoted).
    private static async Task<List<string>> LeavesAsync(NpgsqlConnection connection, string table, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand("select relid::regclass::text from pg_partition_tree(to_regclass($1)) where isleaf order by 1", connection);
        await using var _ = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = table });
        var leaves = new List<string>();
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using var __ = reader.ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            leaves.Add(reader.GetString(0));
        }

        // pg_partition_tree lists nothing for a table that is not partitioned.
        return leaves.Count > 0 ? leaves : [table];
    }

    // Each statement's scan starts where the last one stopped on a table larger than a quarter of shared buffers
    // (synchronized scans), so the batches read such a table about once in all.
    private async Task DeleteBatchesAsync(NpgsqlConnection connection, string table, string bucket, IReadOnlyList<int> buckets,
        CancellationToken cancellationToken)
    {
        while (true)
        {
            var delete = new NpgsqlCommand(
                $"delete from {table} where ctid = any(array(select ctid from {table} where {bucket} = any($1) limit {options.DeleteBatchSize}))",
                connection);
            await using (delete.ConfigureAwait(false))
            {
                delete.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = buckets.ToArray() });
                if (await delete.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 0)
                {
                    return;
                }
            }

            await Task.Delay(options.DeletePause, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task DeleteRowsAsync(int shard, IReadOnlyList<int> buckets, IReadOnlyList<ShardedTable> tables, CancellationToken cancellationToken)
    {
        var connection = await Shards.DataSourceAt(shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        await ReshardingAdmin.ExecuteAsync(connection, "select set_config('shardkit.fence', 'off', false)", cancellationToken).ConfigureAwait(false);
        try
        {
            var bucketCount = Shards.Map.Buckets!.Count;
            foreach (var table in tables)
            {
                var type = await admin.KeyTypeAsync(connection, shard, table, cancellationToken).ConfigureAwait(false);
                var bucket = FenceSql.BucketOf(type, table.KeyColumn, bucketCount);
                // A row's ctid names it only within its own table: a partitioned table's rows are deleted partition by
                // partition (matching the parent's ctids would delete other partitions' rows at the same positions).
                foreach (var leaf in await LeavesAsync(connection, table.Table, cancellationToken).ConfigureAwait(false))
                {
                    await DeleteBatchesAsync(connection, leaf, bucket, buckets, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            // The connection goes back to the app's pool: never with the fence off, even where the pool does not reset
            // sessions (No Reset On Close) and the deletion stopped midway. A broken connection is not pooled again.
            if (connection.State == System.Data.ConnectionState.Open)
            {
                try
                {
                    await ReshardingAdmin.ExecuteAsync(connection, "select set_config('shardkit.fence', '', false)", CancellationToken.None).ConfigureAwait(false);
                }
                catch (Exception e) when (ShardErrors.FromShard(e))
                {
                    // The session is gone with its setting.
                }
            }
        }
    }

    private async Task<bool> SourceOwnsAsync(MoveInfo move, CancellationToken cancellationToken) =>
        await SourceEpochAsync(move, cancellationToken).ConfigureAwait(false) < 0;

    // Whether the target owns every one of the buckets at `epoch` or later (it took them).
    private async Task<bool> TargetOwnsAsync(MoveInfo move, int targetIndex, long epoch, CancellationToken cancellationToken)
    {
        var connection = await Shards.DataSourceAt(targetIndex).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var command = new NpgsqlCommand("select count(*) filter (where owned and epoch >= $2) = cardinality($1) from shardkit.bucket_owner where bucket = any($1)",
            connection);
        await using var __ = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = move.Buckets.ToArray() });
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = epoch });
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is true;
    }

    // The buckets' epoch on the source once it gave them up; -1 while it still owns any.
    private async Task<long> SourceEpochAsync(MoveInfo move, CancellationToken cancellationToken)
    {
        var connection = await Shards.DataSourceAt(Shards.Map.IndexOf(move.Source)).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var command = new NpgsqlCommand("select case when bool_or(owned) then -1 else max(epoch) end from shardkit.bucket_owner where bucket = any($1)", connection);
        await using var __ = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = move.Buckets.ToArray() });
        return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    // The planner's row count of each table, times the moving share of buckets: enough for an ETA.
    private async Task<long> EstimateRowsAsync(int shard, IReadOnlyList<MovedTable> tables, int moving, int bucketCount, CancellationToken cancellationToken)
    {
        var connection = await Shards.DataSourceAt(shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        // A table never vacuumed or analyzed has reltuples -1 (a fresh bulk load often is one): then the estimate is
        // unknown (-1), not 0 rows.
        var command = new NpgsqlCommand(
            "select case when bool_or(reltuples < 0) then -1 else coalesce(sum(reltuples), 0) end::bigint from pg_class where oid = any($1::regclass[])",
            connection);
        await using var __ = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = tables.Select(t => t.QualifiedName).ToArray() });
        var rows = (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        return rows < 0 ? -1 : rows * moving / bucketCount;
    }

    private async Task<IReadOnlyDictionary<string, int>> BucketsPerScanAsync(int shard, IReadOnlyList<MovedTable> tables, int bucketCount,
        CancellationToken cancellationToken)
    {
        var connection = await Shards.DataSourceAt(shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        return await BucketReplication.BucketsPerScanAsync(connection, tables, bucketCount, options.CopyScanBytes, cancellationToken).ConfigureAwait(false);
    }

    private async Task<NpgsqlLogSequenceNumber> CurrentLsnAsync(int shard, CancellationToken cancellationToken)
    {
        var connection = await Shards.DataSourceAt(shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var command = new NpgsqlCommand("select pg_current_wal_lsn()", connection);
        await using var __ = command.ConfigureAwait(false);
        return (NpgsqlLogSequenceNumber)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    // Records the move unless another unfinished move holds one of its buckets, and unless the catalog places a bucket
    // elsewhere than the source by now: checked and recorded under one catalog lock, so two movers never both start.
    private async Task RecordAloneAsync(string id, int[] buckets, string source, string target, CancellationToken cancellationToken)
    {
        var connection = await admin.Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await using var __ = transaction.ConfigureAwait(false);
        await ReshardingAdmin.ExecuteAsync(connection, $"select pg_advisory_xact_lock({MoveLockKey})", cancellationToken).ConfigureAwait(false);
        var check = new NpgsqlCommand("""
            select coalesce((select id from shardkit.move where state not in ('Done', 'Cancelled') and buckets && @buckets limit 1),
                            (select 'placed:' || string_agg(bucket::text, ',') from shardkit.map_bucket where bucket = any(@buckets) and shard <> @source))
            """, connection, transaction);
        await using (check.ConfigureAwait(false))
        {
            check.Parameters.Add(new NpgsqlParameter<int[]>("buckets", buckets));
            check.Parameters.Add(new NpgsqlParameter<string>("source", source));
            switch (await check.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))
            {
                case string placed when placed.StartsWith("placed:", StringComparison.Ordinal):
                    throw new ShardMoveException(null, $"Bucket(s) {placed[7..]} are no longer on '{source}' (another move took them); " +
                        "read the map again and choose the buckets from their current shard.");
                case string other:
                    throw new ShardMoveException(other, $"Move {other} is still moving some of these buckets; resume or cancel it first.");
            }
        }

        var insert = new NpgsqlCommand(
            "insert into shardkit.move (id, buckets, source, target, state) values (@id, @buckets, @source, @target, 'Started')", connection, transaction);
        await using (insert.ConfigureAwait(false))
        {
            insert.Parameters.Add(new NpgsqlParameter<string>("id", id));
            insert.Parameters.Add(new NpgsqlParameter<int[]>("buckets", buckets));
            insert.Parameters.Add(new NpgsqlParameter<string>("source", source));
            insert.Parameters.Add(new NpgsqlParameter<string>("target", target));
            await insert.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    private const long MoveLockKey = 0x5348_4B4D_4F56_4553; // "SHKMOVES"

    private async Task<HashSet<(string, int)>> DoneChunksAsync(string moveId, CancellationToken cancellationToken)
    {
        var connection = await admin.Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var command = new NpgsqlCommand("select table_name, bucket from shardkit.move_chunk where move_id = $1", connection);
        await using var __ = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = moveId });
        var done = new HashSet<(string, int)>();
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                done.Add((reader.GetString(0), reader.GetInt32(1)));
            }
        }

        return done;
    }

    // A scan's chunks, recorded in one round trip and one commit on the catalog (not one per bucket); a cancel's mark on
    // the move stops the copy here, at the scan's end (a scan's session that is idle between scans is not ended by the
    // cancel). The move's row is locked first: parallel scans record one after the other, so each total counts every
    // chunk committed before it. Without the lock two scans' inserts ran at once and the later update, waiting on the
    // earlier one's row lock, kept the sum of the snapshot it started with, which lacked the earlier scan's rows.
    internal async Task ChunksDoneAsync(string moveId, string table, IReadOnlyList<(int Bucket, long Rows)> chunks, CancellationToken cancellationToken)
    {
        var connection = await admin.Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var error = await ExecuteCatalogAsync(connection, """
            select 1 from shardkit.move where id = $1 for update;
            insert into shardkit.move_chunk (move_id, table_name, bucket, rows) select $1, $2, b, r from unnest($3::int[], $4::bigint[]) as c(b, r)
            on conflict do nothing;
            update shardkit.move set rows_copied = (select coalesce(sum(rows), 0) from shardkit.move_chunk where move_id = $1), updated = now() where id = $1;
            select error from shardkit.move where id = $1;
            """, cancellationToken, moveId, table, chunks.Select(c => c.Bucket).ToArray(), chunks.Select(c => c.Rows).ToArray()).ConfigureAwait(false);
        if (error is CancelRequested)
        {
            throw new BucketMoveException($"Move {moveId} is being cancelled: its copy stops after this scan.");
        }
    }

    private async Task<long> RowsCopiedAsync(string moveId, CancellationToken cancellationToken) =>
        (await ReadMoveAsync(moveId, cancellationToken).ConfigureAwait(false)).RowsCopied;

    public async Task<MoveInfo> ReadMoveAsync(string moveId, CancellationToken cancellationToken) =>
        (await ReadMovesAsync(moveId, cancellationToken).ConfigureAwait(false)).FirstOrDefault()
        ?? throw new ShardMoveException(moveId, $"There is no move '{moveId}' in the catalog; list the moves with GetMovesAsync (`shardkit move list`).");

    public async Task<IReadOnlyList<MoveInfo>> ReadMovesAsync(string? moveId, CancellationToken cancellationToken)
    {
        var connection = await admin.Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var command = new NpgsqlCommand(
            "select id, buckets, source, target, state, rows_copied, pause_ms, error from shardkit.move where $1::text is null or id = $1 order by started, id",
            connection);
        await using var __ = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = moveId, NpgsqlDbType = NpgsqlDbType.Text });
        var moves = new List<MoveInfo>();
        var reader = await ReshardingAdmin.ExecuteReaderAsync(command, cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                moves.Add(new MoveInfo(reader.GetString(0), reader.GetFieldValue<int[]>(1), reader.GetString(2), reader.GetString(3),
                    Enum.Parse<MoveState>(reader.GetString(4)), reader.GetInt64(5), reader.IsDBNull(6) ? null : reader.GetDouble(6),
                    reader.IsDBNull(7) ? null : reader.GetString(7)));
            }
        }

        return moves;
    }

    private async Task<MoveState> SetStateAsync(string moveId, MoveState state, CancellationToken cancellationToken)
    {
        // A cancel's mark stays: the mover it stops reads it when it fails.
        await ExecuteCatalogAsync("update shardkit.move set state = $2, error = case when error = $3 then error end, updated = now() where id = $1",
                cancellationToken, moveId, state.ToString(), CancelRequested)
            .ConfigureAwait(false);
        ShardKitLog.MoveStep(Shards.Logger, moveId, state.ToString(), "recorded");
        return state;
    }

    private async Task TryRecordErrorAsync(string moveId, Exception error, string prefix)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await ExecuteCatalogAsync("update shardkit.move set error = $2, updated = now() where id = $1", timeout.Token, moveId,
                prefix + error.GetType().Name + ": " + error.Message).ConfigureAwait(false);
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is OperationCanceledException)
        {
            // The catalog is down too: the state it holds is still where the move stopped.
        }
    }

    private async Task ExecuteCatalogAsync(string sql, CancellationToken cancellationToken, params object[] parameters)
    {
        var connection = await admin.Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        await ExecuteCatalogAsync(connection, sql, cancellationToken, parameters).ConfigureAwait(false);
    }

    // Returns the first value of the script's last result, if it has one.
    internal static async Task<object?> ExecuteCatalogAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken, params object[] parameters)
    {
        // Named parameters let Npgsql split a script into statements; $n would send it as one (refused with parameters).
        // The catalog's records (a chunk done, a switch) must be durable before the move goes on.
        var command = new NpgsqlCommand("select set_config('synchronous_commit', 'on', false);\n" +
            System.Text.RegularExpressions.Regex.Replace(sql, @"\$(\d+)", "@p$1"), connection);
        await using var __ = command.ConfigureAwait(false);
        for (var i = 0; i < parameters.Length; i++)
        {
            command.Parameters.Add(new NpgsqlParameter("p" + (i + 1).ToString(CultureInfo.InvariantCulture), parameters[i]));
        }

        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using var ___ = reader.ConfigureAwait(false);
        object? last = null;
        do
        {
            if (reader.FieldCount > 0 && await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                last = reader.IsDBNull(0) ? null : reader.GetValue(0);
            }
        }
        while (await reader.NextResultAsync(cancellationToken).ConfigureAwait(false));

        return last;
    }

    private async Task RefreshAsync(CancellationToken cancellationToken)
    {
        if (Shards.Follower is { } follower)
        {
            await follower.RefreshAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    // Reports reach the caller's IProgress on the mover's own thread, one at a time and in the order of the steps (a
    // Progress<T> would post them to the thread pool, where a Copying report could arrive after the move ended).
    private void Report(string moveId, MoveState state, long rows, long lag, TimeSpan? pause)
    {
        if (progress is null)
        {
            return;
        }

        lock (_reporting)
        {
            progress.Report(new MoveProgress(moveId, state, rows, lag, _clock.Elapsed, pause, _estimate));
        }
    }

    // The copy's parallel scans report their running total as each chunk commits: passed on at once and never going back.
    private sealed class CopyProgress(Action<long> report) : IProgress<long>
    {
        private readonly Lock _gate = new();
        private long _highest = -1;

        public void Report(long value)
        {
            lock (_gate)
            {
                if (value <= _highest)
                {
                    return;
                }

                _highest = value;
                report(value);
            }
        }
    }

    private static string Describe(IReadOnlyList<int> buckets) =>
        buckets.Count <= 8 ? string.Join(",", buckets) : $"{string.Join(",", buckets.Take(8))}… ({buckets.Count})";
}

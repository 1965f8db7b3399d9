using System.Diagnostics;
using System.Globalization;
using Npgsql;

namespace ShardKit;

internal sealed partial class BucketMover
{
    // A catch-up round this quick, twice in a row, means the frozen drain will be about as quick.
    private static readonly TimeSpan QuickRound = TimeSpan.FromMilliseconds(20);
    private const int SettleRounds = 8;

    // Freeze the buckets on the source, drain, verify, switch. Returns the writers' pause.
    // What the writers wait for is kept to the freeze's own steps: the exact comparison of the whole buckets runs before
    // (VerifyBeforeFreezeAsync), the catch-up stream applies while the freeze is being taken, and every connection the
    // switch needs is open before.
    private async Task<TimeSpan> FreezeAndSwitchAsync(MoveInfo move, BucketReplication replication, IReadOnlyList<MovedTable> moved,
        int sourceIndex, int targetIndex, string targetCs, int bucketCount, CancellationToken cancellationToken)
    {
        // Recorded before the freeze (one catalog round trip less while writers wait): a resume in Switching whose source
        // still owns the buckets goes back to catching up.
        await SetStateAsync(move.MoveId, MoveState.Switching, cancellationToken).ConfigureAwait(false);
        BucketReplication.VerifyBaseline? baseline = null;
        try
        {
            if (options.Verify)
            {
                var started = Stopwatch.GetTimestamp();
                baseline = await replication.VerifyBeforeFreezeAsync(targetCs, move.Buckets, bucketCount,
                    token => HoldWritersAsync(move, sourceIndex, token), cancellationToken).ConfigureAwait(false);
                ShardKitLog.MoveStep(Shards.Logger, move.MoveId, "verified before the freeze", baseline is null
                    ? "writers could not be held for the snapshot; the freeze compares every row"
                    : string.Create(CultureInfo.InvariantCulture, $"in {Stopwatch.GetElapsedTime(started).TotalMilliseconds:F0} ms"));
            }

            for (var attempt = 1; ; attempt++)
            {
                if (await TryFreezeAndSwitchAsync(move, replication, moved, baseline, sourceIndex, targetIndex, targetCs, bucketCount, attempt,
                        cancellationToken).ConfigureAwait(false) is { } pause)
                {
                    return pause;
                }
            }
        }
        finally
        {
            replication.StopRecording();
            if (baseline is not null)
            {
                await baseline.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    // Catch-up rounds until two in a row are quick (at most a few): the drain after the freeze is then a round like them.
    private static async Task<TimeSpan> SettleAsync(BucketReplication replication, string targetCs, IReadOnlyList<int> buckets, int bucketCount,
        CancellationToken cancellationToken)
    {
        var last = TimeSpan.Zero;
        for (int round = 0, quick = 0; round < SettleRounds && quick < 2; round++)
        {
            var started = Stopwatch.GetTimestamp();
            await replication.CatchUpAsync(targetCs, buckets, bucketCount, default, cancellationToken).ConfigureAwait(false);
            last = Stopwatch.GetElapsedTime(started);
            quick = last <= QuickRound ? quick + 1 : 0;
        }

        return last;
    }

    // One try of the freeze; null when the buckets' lock could not be had in time (caught up; the caller tries again).
    private async Task<TimeSpan?> TryFreezeAndSwitchAsync(MoveInfo move, BucketReplication replication, IReadOnlyList<MovedTable> moved,
        BucketReplication.VerifyBaseline? baseline, int sourceIndex, int targetIndex, string targetCs, int bucketCount, int attempt,
        CancellationToken cancellationToken)
    {
        var buckets = BucketArraySql(move.Buckets);
        var source = await Shards.DataSourceAt(sourceIndex).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var sourceLifetime = source.ConfigureAwait(false);
        var marker = await Shards.DataSourceAt(sourceIndex).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var markerLifetime = marker.ConfigureAwait(false);
        var target = await Shards.DataSourceAt(targetIndex).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var targetLifetime = target.ConfigureAwait(false);
        var catalog = await admin.Catalog.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var catalogLifetime = catalog.ConfigureAwait(false);
        // Session settings now, so that each step of the freeze is one round trip. The source's giving up and the target's
        // taking over must survive a crash once made: durable whatever the server's default.
        await Task.WhenAll(
            ReshardingAdmin.ExecuteAsync(source, $"{BucketReplication.VerifySettings}; select set_config('synchronous_commit', 'on', false)", cancellationToken),
            ReshardingAdmin.ExecuteAsync(target, $"{BucketReplication.VerifySettings}; select set_config('synchronous_commit', 'on', false)", cancellationToken),
            ReshardingAdmin.ExecuteAsync(catalog, "select set_config('synchronous_commit', 'on', false)", cancellationToken)).ConfigureAwait(false);

        var settled = await SettleAsync(replication, targetCs, move.Buckets, bucketCount, cancellationToken).ConfigureAwait(false);
        if (baseline is not null)
        {
            // The freeze's comparison once while writers still run: it sums the snapshots' part for the keys written so
            // far, and its code is compiled before the writers wait (a first run compiled ~60 methods inside the pause,
            // 70–140 ms of it on two busy cores). Its answer means nothing yet and is not used.
            await baseline.CheckAsync(source, target, rehearsal: true, cancellationToken).ConfigureAwait(false);
        }

        // The stream applies whatever comes while the freeze is taken, up to the marker written once it is. The marker's
        // statement is sent now and waits on the source for the freeze's lock statement to let go of the gate: it is
        // written the moment the buckets are locked, not a round trip to here and back later.
        var nonce = BucketReplication.NewMarker();
        var gate = await TryTakeMarkerGateAsync(source, move, cancellationToken).ConfigureAwait(false);
        long epoch = -1;
        var givingUp = false; // the source's giving up may have been sent (and committed) from here on
        var drain = replication.CatchUpToMarkerAsync(targetCs, move.Buckets, bucketCount, nonce, cancellationToken);
        var marking = gate is null ? null : WriteMarkerAsync(marker, nonce, cancellationToken, gate);
        var drained = false;
        var gaveUp = false;
        Task? take = null;
        try
        {
            var requested = Stopwatch.GetTimestamp();
            try
            {
                // Frozen once the select returns: every write of these buckets that committed is in the WAL before a
                // marker written from now on; no other can commit.
                epoch = await FreezeAsync(source, move, buckets, gate?.ReleaseOnceLocked, cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException e) when (LostTheLock(e) && attempt < options.FreezeAttempts)
            {
                ShardKitLog.MoveStep(Shards.Logger, move.MoveId, "freeze could not take the lock",
                    $"attempt {attempt} ({(e.SqlState == PostgresErrorCodes.DeadlockDetected ? "a deadlock with a writer's transaction" : "it waited too long")}); catching up and trying again");
                await ExecuteAsync(source, gate is null ? "rollback" : $"rollback; {gate.Release}", cancellationToken).ConfigureAwait(false);
                await (marking ?? WriteMarkerAsync(marker, nonce, cancellationToken)).ConfigureAwait(false);
                await drain.ConfigureAwait(false);
                drained = true;
                return null;
            }

            var frozen = Stopwatch.GetTimestamp();
            take = ExecuteAsync(target, $"begin; update shardkit.bucket_owner set owned = true, epoch = {epoch}, moved_to = null where bucket = any({buckets})",
                cancellationToken);
            await (marking ?? WriteMarkerAsync(marker, nonce, cancellationToken)).ConfigureAwait(false);
            await drain.ConfigureAwait(false);
            drained = true;
            var drainedAt = Stopwatch.GetElapsedTime(frozen);
            await take.ConfigureAwait(false);
            // The source gives up (committed, durable), naming the target: its refused writers go there at once and wait on
            // the target's row locks (its update was made during the drain). With a baseline it does so in the round trip
            // of the comparison's last step, before the target's answer is in: the target only takes the buckets once both
            // sides agree, and a difference gives them back to the source (VerifyAndGiveUpAsync).
            givingUp = true;
            var how = await VerifyAndGiveUpAsync(move, moved, baseline, source, target, targetCs, bucketCount, epoch, cancellationToken).ConfigureAwait(false);
            var verifiedAt = Stopwatch.GetElapsedTime(frozen);
            gaveUp = true;
            // Then the target takes them, then the catalog (a resume in Switched takes the buckets on the target if the
            // mover stopped between the two). In that order, an app on the catalog's new map finds the target owning
            // them: a read by key takes no lock, and one sent before the target's commit would be refused with no word of
            // where to go. Writers the source's refusal sent to the target early wait on its locks, so the order costs them
            // nothing.
            await ReshardingAdmin.ExecuteAsync(target, "commit", cancellationToken).ConfigureAwait(false);
            // The writers' pause ends here: refused by the source, they wait on the target's locks, which its commit let go.
            // The catalog's switch is for the maps of apps that were not refused (they read the target at once too).
            var pause = Stopwatch.GetElapsedTime(frozen);
            await ExecuteCatalogAsync(catalog, SwitchCatalogSql, cancellationToken, move.Buckets.ToArray(), move.Target, move.MoveId).ConfigureAwait(false);
            await RefreshAsync(cancellationToken).ConfigureAwait(false);
            await ExecuteCatalogAsync("update shardkit.move set pause_ms = $2 where id = $1", cancellationToken, move.MoveId, pause.TotalMilliseconds)
                .ConfigureAwait(false);
            ShardKitLog.MoveStep(Shards.Logger, move.MoveId, "switched", string.Create(CultureInfo.InvariantCulture,
                $"buckets {Describe(move.Buckets)} on '{move.Target}', writers paused {pause.TotalMilliseconds:F1} ms (drained at {drainedAt.TotalMilliseconds:F1}, " +
                $"verified at {verifiedAt.TotalMilliseconds:F1}: {how}; the lock took {Stopwatch.GetElapsedTime(requested, frozen).TotalMilliseconds:F1} ms, " +
                $"the last catch-up round before {settled.TotalMilliseconds:F1} ms)"));
            return pause;
        }
        catch when (!gaveUp)
        {
            // The target took nothing: the source's transaction goes first (its writers wait on it), with the gate the
            // marker waits for; the target's below (the pool would roll both back too).
            await RollbackQuietlyAsync(source, gate?.Release).ConfigureAwait(false);
            if (marking is not null)
            {
                try
                {
                    await marking.WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(false);
                }
                catch (Exception e) when (e is OperationCanceledException or TimeoutException || ShardErrors.FromShard(e))
                {
                    // A marker the stream was not waiting for, or the source is gone.
                }
            }

            if (!drained)
            {
                // The marker will not come: stop the stream (one still being opened is closed when the move lets go of the
                // replication).
                replication.StopCatchUp();
                try
                {
                    await drain.WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(false);
                }
                catch (Exception e) when (e is OperationCanceledException or TimeoutException or BucketMoveException || ShardErrors.FromShard(e))
                {
                    // The stream we stopped; the next catch-up opens it again.
                }
            }

            if (take is not null)
            {
                try
                {
                    await take.ConfigureAwait(false);
                }
                catch (Exception e) when (e is OperationCanceledException || ShardErrors.FromShard(e))
                {
                    // Rolled back below.
                }
            }

            await RollbackQuietlyAsync(target).ConfigureAwait(false);
            if (givingUp)
            {
                // The source may have given the buckets up in the comparison's round trip while another part of it failed
                // (the target's server stopped, the move was cancelled): it owns them again, or a resume finishes the
                // switch when this cannot reach it.
                await TryReclaimOnSourceAsync(move, epoch).ConfigureAwait(false);
            }

            throw;
        }
    }

    // The drain's marker, in a transaction of its own that commits synchronously: the commit flushes the WAL up to it, so
    // the walsender can send it at once. (A marker written inside the freeze's transaction, which holds the lock and an
    // id, reached the stream 20–200 ms later under load, even with the WAL flushed every few milliseconds.)
    // With a gate, the statement first waits on the source until the freeze lets go of it.
    private static Task WriteMarkerAsync(NpgsqlConnection marker, string nonce, CancellationToken cancellationToken, MarkerGate? gate = null) =>
        ExecuteAsync(marker, $"{gate?.Wait}{BucketReplication.MarkerSql(nonce)}; {BucketReplication.FlushWalSql}", cancellationToken);

    // A session lock on the source, keyed by the move, that the freeze's connection holds from before its lock statement
    // until that statement has locked the buckets (Release runs in the same round trip, right after it). The marker's
    // statement waits for it (Wait), so it is written the moment the freeze holds the buckets. A try that does not get the
    // buckets leaves it held; the freeze lets go of it once it stops trying.
    private sealed record MarkerGate(string Wait, string Release, string ReleaseOnceLocked);

    // The gate's lock class on the source (its second key is the hash of the move's id).
    private const int MarkerGateClass = 0x53_484C; // "SHL"

    // The marker waits at most this long for the gate past the freeze's own wait in line (FreezeLockTimeout); the
    // freeze's tries that do not wait take a second or so.
    private const int MarkerGateSlackMs = 60_000;

    // Null when the gate is taken already (a connection of an earlier try that could not let go of it): the marker is then
    // written after the freeze, a round trip later.
    private async Task<MarkerGate?> TryTakeMarkerGateAsync(NpgsqlConnection source, MoveInfo move, CancellationToken cancellationToken)
    {
        var key = $"{MarkerGateClass}, hashtext({ReshardingAdmin.Literal(move.MoveId)})";
        var command = new NpgsqlCommand($"select pg_try_advisory_lock({key})", source);
        await using var _ = command.ConfigureAwait(false);
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is true
            ? new MarkerGate($"select set_config('lock_timeout', '{(long)options.FreezeLockTimeout.TotalMilliseconds + MarkerGateSlackMs}ms', true); " +
                $"select pg_advisory_xact_lock({key}); ",
                $"select pg_advisory_unlock({key})",
                $"select pg_advisory_unlock({key}) where {LockedSql}")
            : null;
    }

    // Locks the buckets' ownership rows on the source. Returns the epoch the switch gives them.
    // `then` runs in the same round trip, right after the lock is had (the marker gate's release; see LockSql).
    private Task<long> FreezeAsync(NpgsqlConnection source, MoveInfo move, string buckets, string? then, CancellationToken cancellationToken) =>
        LockInTurnAsync((wait, afterMiss) => TryFreezeAsync(source, move, buckets, wait, afterMiss, then, cancellationToken));

    // A lock that waits holds the rows it has already locked, so their writers wait too: the first tries take all rows at
    // once or none (nowait; a writer holds its bucket's row for a moment), and only then does one wait in line
    // (lock_timeout). tryLock(wait, afterMiss) runs one try in a transaction of its own and returns null when a row was
    // taken (afterMiss: the last try missed, and its transaction, which holds nothing, is still open).
    private static async Task<T> LockInTurnAsync<T>(Func<bool, bool, Task<T?>> tryLock)
        where T : struct
    {
        for (var attempt = 1; ; attempt++)
        {
            if (await tryLock(attempt > NowaitFreezes, attempt > 1).ConfigureAwait(false) is { } locked)
            {
                return locked;
            }
        }
    }

    // A try that misses costs the writers nothing (it lets go of what it took in the same statement) and one round trip.
    private const int NowaitFreezes = 25;

    // Whether the lock statement of LockSql had the rows (set in its transaction).
    private const string LockedSql = "current_setting('shardkit.locked', true) = 'on'";

    // The statement that locks the buckets' ownership rows in bucket order and selects `columns` over them (epoch, owned),
    // then whether they were had (LockedSql). A try that does not wait locks them in a block of its own that gives back
    // what it took when a row is taken: a try that failed as a statement kept the rows it had locked before the taken one
    // until its rollback, a round trip later, and the writers of those buckets waited for it. After a miss its still open
    // transaction is rolled back first, in the same round trip.
    private string LockSql(string buckets, string columns, bool wait, bool afterMiss) => LockSql(buckets, columns, wait, afterMiss, options.FreezeLockTimeout);

    internal static string LockSql(string buckets, string columns, bool wait, bool afterMiss, TimeSpan lockTimeout)
    {
        var rows = $"select epoch, owned from shardkit.bucket_owner where bucket = any({buckets}) order by bucket for update";
        var take = wait
            ? "set local shardkit.locked = on"
            : $"do $lock$ begin perform 1 from ({rows} nowait) r; perform set_config('shardkit.locked', 'on', true); " +
              "exception when lock_not_available then perform set_config('shardkit.locked', 'off', true); end $lock$";
        return $"{(afterMiss ? "rollback; " : "")}begin; set local lock_timeout = '{(long)lockTimeout.TotalMilliseconds}ms'; " +
            $"{take}; select {columns}, {LockedSql} from ({rows}) o where {LockedSql}";
    }

    private async Task<long?> TryFreezeAsync(NpgsqlConnection source, MoveInfo move, string buckets, bool wait, bool afterMiss, string? then,
        CancellationToken cancellationToken)
    {
        var sql = LockSql(buckets, "max(epoch), bool_and(owned), count(*)", wait, afterMiss) + (then is null ? "" : "; " + then);
        if (await TryLockAsync(source, sql, 3, cancellationToken).ConfigureAwait(false) is not { } row)
        {
            return null;
        }

        return row[1] is not true || (long)row[2] != move.Buckets.Count
            ? throw new ShardMoveException(move.MoveId, $"Move {move.MoveId}: '{move.Source}' no longer owns all of buckets " +
                $"{Describe(move.Buckets)}; nothing was switched. Cancel this move.")
            : (long)row[0] + 1;
    }

    // Runs one try of LockSql (selecting `columns` columns) and returns their values, or null when the rows were not had.
    internal static async Task<object[]?> TryLockAsync(NpgsqlConnection connection, string sql, int columns, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(sql, connection);
        await using var _ = command.ConfigureAwait(false);
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using var __ = reader.ConfigureAwait(false);
        object[]? row = null;
        do
        {
            if (reader.FieldCount == columns + 1 && await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                row = new object[columns + 1];
                reader.GetValues(row);
            }
        }
        while (await reader.NextResultAsync(cancellationToken).ConfigureAwait(false));

        return row is not null && row[columns] is true ? row : null;
    }

    // Gives the frozen buckets up on the source, once their rows are the same on both sides (options.Verify). With a
    // baseline only the rows written since it are compared (see VerifyBaseline.CheckAsync for why that is the same check),
    // and the source gives up in the round trip of that comparison, before the target's answer is in; the target takes
    // the buckets only after this returns. When that comparison cannot decide, or finds a difference, every row is
    // compared as before and decides; a difference found after the source gave up gives the buckets back to it.
    private async Task<string> VerifyAndGiveUpAsync(MoveInfo move, IReadOnlyList<MovedTable> moved, BucketReplication.VerifyBaseline? baseline,
        NpgsqlConnection source, NpgsqlConnection target, string targetCs, int bucketCount, long epoch, CancellationToken cancellationToken)
    {
        string[] giveUp =
        [
            $"update shardkit.bucket_owner set owned = false, epoch = {epoch}, moved_to = {ReshardingAdmin.Literal(move.Target)} " +
            $"where bucket = any({BucketArraySql(move.Buckets)})",
            "commit",
        ];
        if (!options.Verify)
        {
            await ExecuteAsync(source, string.Join("; ", giveUp), cancellationToken).ConfigureAwait(false);
            return "not verified";
        }

        var gaveUp = false;
        if (baseline is not null)
        {
            var quick = await baseline.CheckAsync(source, target, rehearsal: false, cancellationToken, giveUp).ConfigureAwait(false);
            gaveUp = quick is not null;
            if (quick is { Count: 0 })
            {
                return string.Create(CultureInfo.InvariantCulture, $"{baseline.Keys.Count} keys written since the snapshot compared");
            }

            ShardKitLog.MoveStep(Shards.Logger, move.MoveId, "verify", quick is null
                ? "a truncate came since the snapshot; comparing every row"
                : $"{quick.Count} chunk(s) differ from the snapshot's account ({string.Join("; ", quick.Take(3))}); comparing every row");
        }

        await VerifyEveryRowAsync(move, moved, targetCs, bucketCount, gaveUp ? epoch : null, cancellationToken).ConfigureAwait(false);
        if (!gaveUp)
        {
            await ExecuteAsync(source, string.Join("; ", giveUp), cancellationToken).ConfigureAwait(false);
        }

        return "every row compared";
    }

    // Compares every row of the buckets on both sides (no one may write them: frozen, or given up by the source and not
    // taken by the target; a resume calls it only when the target does not own them). A difference fails the move; when
    // the source gave the buckets up at `gaveUpAt`, they are first given back to it, so that the move can be cancelled.
    private async Task VerifyEveryRowAsync(MoveInfo move, IReadOnlyList<MovedTable> moved, string targetCs, int bucketCount, long? gaveUpAt,
        CancellationToken cancellationToken)
    {
        var sourceCs = Shards.ShardAt(Shards.Map.IndexOf(move.Source)).ConnectionString;
        var mismatches = await BucketReplication.VerifyAsync(sourceCs, targetCs, moved, move.Buckets, bucketCount, cancellationToken).ConfigureAwait(false);
        if (mismatches.Count == 0)
        {
            return;
        }

        if (gaveUpAt is { } epoch)
        {
            await ReclaimOnSourceAsync(move, epoch, "the rows differ").ConfigureAwait(false);
        }

        throw new ShardMoveException(move.MoveId, $"Move {move.MoveId}: the target's rows differ from the source's in " +
            $"{mismatches.Count} chunk(s) ({string.Join("; ", mismatches.Take(5))}); nothing was switched ('{move.Source}' owns the buckets). " +
            "Cancel the move (it removes the target's copies) and start it again.");
    }

    // The source owns again the buckets it gave up at `epoch`, which the target has not taken (only the mover commits the
    // target's taking, after this could be called), and the followers hear of it: writers its refusal sent to the target,
    // refused there too, wait for a newer map and then find the source owning them. Not cancellable: a move stopped here
    // would leave the buckets owned by no shard until it is resumed. True when it gave them back.
    private async Task<bool> ReclaimOnSourceAsync(MoveInfo move, long epoch, string why)
    {
        var connection = await Shards.DataSourceAt(Shards.Map.IndexOf(move.Source)).OpenConnectionAsync(CancellationToken.None).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var reclaim = new NpgsqlCommand("set synchronous_commit = on; " +
            $"with taken as (update shardkit.bucket_owner set owned = true, moved_to = null, epoch = {epoch + 1} " +
            $"where bucket = any({BucketArraySql(move.Buckets)}) and not owned and epoch = {epoch} returning 1) select count(*)::int from taken", connection);
        await using var __ = reclaim.ConfigureAwait(false);
        if (await reclaim.ExecuteScalarAsync(CancellationToken.None).ConfigureAwait(false) is not > 0)
        {
            return false;
        }

        ShardKitLog.MoveStep(Shards.Logger, move.MoveId, "verify", $"{why}; '{move.Source}' owns buckets {Describe(move.Buckets)} again");
        await AnnounceAsync(CancellationToken.None).ConfigureAwait(false);
        return true;
    }

    // As ReclaimOnSourceAsync, when the move failed for another reason: a source or catalog it cannot reach leaves the
    // buckets to a resume (which finds them given up and not taken, compares every row and finishes the switch).
    private async Task TryReclaimOnSourceAsync(MoveInfo move, long epoch)
    {
        try
        {
            await ReclaimOnSourceAsync(move, epoch, "the freeze failed after the source gave the buckets up").ConfigureAwait(false);
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is InvalidOperationException)
        {
            ShardKitLog.MoveStep(Shards.Logger, move.MoveId, "freeze", $"the source could not take the buckets back ({e.Message}); resume the move to finish it");
        }
    }

    // Makes the buckets' writers wait (for the verify's snapshot): their ownership rows locked on the source, as the freeze
    // locks them. Null when the lock was not had (within FreezeLockTimeout, or a deadlock).
    private async Task<IAsyncDisposable?> HoldWritersAsync(MoveInfo move, int sourceIndex, CancellationToken cancellationToken)
    {
        var connection = await Shards.DataSourceAt(sourceIndex).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // As the freeze locks them (LockInTurnAsync).
            var buckets = BucketArraySql(move.Buckets);
            await LockInTurnAsync(async (wait, afterMiss) =>
                await TryLockAsync(connection, LockSql(buckets, "count(*)", wait, afterMiss), 1, cancellationToken).ConfigureAwait(false) is null
                    ? null
                    : (bool?)true).ConfigureAwait(false);
            return new HeldWriters(connection);
        }
        catch (PostgresException e) when (LostTheLock(e))
        {
            await RollbackQuietlyAsync(connection).ConfigureAwait(false);
            await connection.DisposeAsync().ConfigureAwait(false);
            return null;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    // The buckets' lock was not had: it waited longer than FreezeLockTimeout, or it closed a cycle with a writer's
    // transaction that holds one bucket and waits for another the move had locked (the move waited first, so PostgreSQL
    // ends the move's transaction, not the writer's). Either way the move lets go and tries again.
    private static bool LostTheLock(PostgresException e) =>
        e.SqlState is PostgresErrorCodes.LockNotAvailable or PostgresErrorCodes.DeadlockDetected;

    private static Task ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken) =>
        ReshardingAdmin.ExecuteAsync(connection, sql, cancellationToken);

    private static async Task RollbackQuietlyAsync(NpgsqlConnection connection, string? then = null)
    {
        try
        {
            if (connection.State == System.Data.ConnectionState.Open)
            {
                await ReshardingAdmin.ExecuteAsync(connection, then is null ? "rollback" : $"rollback; {then}", CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is InvalidOperationException)
        {
            // A broken connection: the server rolled back when it went.
        }
    }

    private static string BucketArraySql(IReadOnlyList<int> buckets) =>
        "array[" + string.Join(",", buckets.Select(b => b.ToString(CultureInfo.InvariantCulture))) + "]::int[]";

    private sealed class HeldWriters(NpgsqlConnection connection) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await RollbackQuietlyAsync(connection).ConfigureAwait(false);
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }
}

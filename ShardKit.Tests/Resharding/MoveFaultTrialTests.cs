using Dapper;
using System.Globalization;
using ShardKit.Tests.Distributed;
using ShardKit.Tests.Harness;

namespace ShardKit.Tests.Resharding;

/// <summary>
/// Randomized moves under writers (single statements, item and key lists, distributed transactions, bulk loads), each
/// stopped at a random step, then resumed or cancelled at random; afterwards every committed write is where the map
/// says, once, and nothing of any move is left. On the run's shared servers the mover is killed or the source's
/// replication connection cut; on servers of the test's own, the source or the target server is stopped hard
/// (<c>pg_ctl stop -m immediate</c>) and started again. <c>SHARDKIT_MOVE_TRIALS</c> sets the number of moves of each
/// (6 and 4 by default), <c>SHARDKIT_MOVE_WRITERS</c> the number of concurrent writers (6 by default).
/// </summary>
[TestFixture]
public sealed class MoveFaultTrialTests
{
    private enum Fault
    {
        KillMover,
        CutStream,
        StopSource,
        StopTarget,
    }

    private static int Setting(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), CultureInfo.InvariantCulture, out var n) ? n : fallback;

    [Test]
    public async Task Moves_stopped_at_random_steps_then_resumed_or_cancelled_lose_and_duplicate_nothing()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        await RunAsync(shards, null, Setting("SHARDKIT_MOVE_TRIALS", 6), [Fault.KillMover, Fault.KillMover, Fault.CutStream]);
    }

    [Test]
    public async Task Moves_whose_source_or_target_server_stops_at_random_steps_lose_and_duplicate_nothing()
    {
        // The test servers' synchronous_commit = off would let a hard stop lose commits PostgreSQL had acknowledged.
        await using var cluster = await DedicatedCluster.StartAsync(2, "synchronous_commit=on");
        await using var shards = await ReshardingShards.CreateOnAsync(cluster.ConnectionStrings);
        await RunAsync(shards, cluster, Setting("SHARDKIT_MOVE_TRIALS", 4), [Fault.StopSource, Fault.StopTarget]);
    }

    private static async Task RunAsync(ReshardingShards shards, LocalPostgresCluster? cluster, int trials, Fault[] faults)
    {
        // Its recovery rolls back a distributed transaction a stopped server left undecided after 5 s (not 1 min): the
        // freeze of a bucket it touched waits for that.
        var admin = shards.NewSource(more: b => b.UseDistributedTransactions(o => o.AbortPreparedAfter = TimeSpan.FromSeconds(5)));
        await admin.Resharding.SeedAsync([new ShardedTable(ReshardingShards.Table, "id")]);
        var truth = await MoveTests.SeedRowsAsync(admin, 2000);
        var app = shards.NewSource();
        await using var writers = new MoveWriters(app, writers: Setting("SHARDKIT_MOVE_WRITERS", 6), keys: 3000);
        writers.Start();
        using var stopRecovery = new CancellationTokenSource();
        var recovery = cluster is null ? Task.CompletedTask : RecoverUntilAsync(admin, stopRecovery.Token);
        var outcomes = new List<string>();
        try
        {
            await RunTrialsAsync();
        }
        finally
        {
            // Also when a trial threw: writers left running would keep preparing transactions while the test cleans up.
            await Task.Delay(200);
            await writers.StopAsync();
            await stopRecovery.CancelAsync();
            await recovery;
            TestContext.Out.WriteLine(string.Join("\n", outcomes));
        }

        async Task RunTrialsAsync()
        {
            var random = new Random(20261204);
            var options = new MoveOptions { CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero, AnnounceWait = TimeSpan.FromMilliseconds(50) };
            for (var trial = 0; trial < trials && writers.Errors.IsEmpty; trial++)
            {
                await admin.Resharding.RefreshMapAsync();
                var from = random.Next(2);
                var owned = admin.Map.Buckets!.BucketsOf(from);
                if (owned.Count < 2)
                {
                    from = 1 - from;
                    owned = admin.Map.Buckets.BucketsOf(from);
                }

                var buckets = owned.OrderBy(_ => random.Next()).Take(random.Next(1, 4)).ToArray();
                var stopAt = (MoveState)random.Next((int)MoveState.Copying, (int)MoveState.Done + 1); // Done: not stopped
                var fault = faults[random.Next(faults.Length)];
                var stopped = fault switch { Fault.StopSource => from, Fault.StopTarget => 1 - from, _ => -1 };
                using var kill = new CancellationTokenSource();
                string? moveId = null;
                Task? faulting = null;
                var outcome = "";
                var failure = "";
                try
                {
                    await admin.Resharding.MoveBucketsAsync(buckets, $"s{1 - from}", options, new InlineProgress(p =>
                    {
                        moveId = p.MoveId;
                        if (p.State != stopAt || stopAt == MoveState.Done || faulting is not null)
                        {
                            return;
                        }

                        switch (fault)
                        {
                            case Fault.KillMover:
                                kill.Cancel();
                                faulting = Task.CompletedTask;
                                break;
                            case Fault.CutStream:
                                faulting = CutReplicationAsync(shards, from);
                                break;
                            default:
                                writers.OutageBegins();
                                faulting = cluster!.StopAsync(stopped);
                                break;
                        }
                    }), kill.Token);
                    outcome = $"{trial}: {(faulting is null ? "done" : $"{fault} in {stopAt}, done")}";
                }
                catch (OperationCanceledException) when (fault == Fault.KillMover)
                {
                    // the mover was killed
                }
                catch (Exception e) when (fault != Fault.KillMover && e is ShardKitException or Npgsql.NpgsqlException or OperationCanceledException or TimeoutException)
                {
                    // the mover failed on the cut connection or the stopped server (or, right after a restart, on a pooled
                    // connection the restart broke): what it recorded is resumed or cancelled below
                    moveId ??= (e as ShardMoveException)?.MoveId;
                    failure = $" ({e.GetType().Name})";
                }
                finally
                {
                    if (faulting is not null)
                    {
                        await faulting;
                    }
                }

                if (stopped >= 0 && faulting is not null)
                {
                    await Task.Delay(random.Next(0, 1000));
                    await cluster!.RestartAsync(stopped);
                    Forget(admin);
                    Forget(app);
                    Npgsql.NpgsqlConnection.ClearAllPools(); // the test's own direct connections (and the mover's)
                    writers.OutageEnds(TimeSpan.FromSeconds(20));
                }

                if (outcome.Length > 0)
                {
                    outcomes.Add(outcome);
                    continue;
                }

                if (moveId is null)
                {
                    outcomes.Add($"{trial}: {fault} before it was recorded{failure}");
                    continue;
                }

                var move = await RetryAsync(async () => (await admin.Resharding.GetMovesAsync()).Single(m => m.MoveId == moveId));
                if (random.Next(2) == 0 && move.State is not (MoveState.Switched or MoveState.Done))
                {
                    try
                    {
                        await RetryAsync(() => admin.Resharding.CancelMoveAsync(move.MoveId));
                        outcomes.Add($"{trial}: {fault} in {move.State}{failure}, cancelled");
                    }
                    catch (ShardMoveException e) when (e.Message.Contains("cannot be cancelled", StringComparison.Ordinal))
                    {
                        // Stopped in Switching after the source gave the buckets up: the refusal says to resume, as an operator would.
                        var note = await ResumeAsync(admin, move.MoveId, options);
                        outcomes.Add($"{trial}: {fault} in {move.State}{failure}, cancel refused (switched), resumed{note}");
                    }
                }
                else
                {
                    var note = await ResumeAsync(admin, move.MoveId, options);
                    outcomes.Add($"{trial}: {fault} in {move.State}{failure}, resumed{note}");
                }
            }

        }
        TestContext.Out.WriteLine($"{writers.Operations} writes, {writers.Refused} distributed or bulk writes refused by a fence and tried again, " +
                                  $"{writers.Settled} failed in an outage and settled by reading, {writers.InDoubt.Count} keys of distributed transactions in doubt");
        Assert.That(writers.Errors, Is.Empty, string.Join("\n", writers.Errors.Select(e => e.ToString())));
        Assert.That(outcomes, Has.Count.EqualTo(trials));
        if (cluster is not null)
        {
            // A transaction a stop left prepared without a decision is rolled back once it is AbortPreparedAfter (5 s) old:
            // one prepared just before the last trial's outage may still be younger than that here, so recovery runs on
            // for three times that at most.
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(15);
            do
            {
                await admin.RecoverAsync();
            }
            while (await PreparedLeftAsync(shards) > 0 && DateTime.UtcNow < until && await Delay(500));

            Assert.That(await PreparedLeftAsync(shards), Is.Zero, "recovery finished every distributed transaction");
        }

        writers.ResolveInDoubt((await shards.AllRowsAsync()).ToDictionary(r => r.Id, r => r.N));
        foreach (var (key, value) in writers.Truth)
        {
            truth[key] = value;
        }

        await MoveTests.AssertPlacedAsync(shards, admin, truth);
        Assert.That((await admin.Resharding.GetMovesAsync()).Select(m => m.State), Is.All.AnyOf(MoveState.Done, MoveState.Cancelled));
    }

    // A connection cut: the source's walsender for this database's slot is terminated, as a network fault would end it.
    private static async Task CutReplicationAsync(ReshardingShards shards, int source)
    {
        await using var connection = await shards.OpenAsync(source);
        await connection.ExecuteAsync(
            "select pg_terminate_backend(active_pid) from pg_replication_slots where database = current_database() and active_pid is not null");
    }

    // What an app with distributed transactions runs (AddShardKitRecovery): prepared transactions a stopped server left
    // hold their locks, and a freeze waits for them.
    private static async Task RecoverUntilAsync(ShardedDataSource source, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await source.RecoverAsync(stop);
            }
            catch (Exception) when (!stop.IsCancellationRequested)
            {
                // a server is down: the next round tries again
            }
            catch (OperationCanceledException)
            {
                return;
            }

            try
            {
                await Task.Delay(500, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private static async Task<bool> Delay(int milliseconds)
    {
        await Task.Delay(milliseconds);
        return true;
    }

    private static async Task<long> PreparedLeftAsync(ReshardingShards shards)
    {
        long total = 0;
        for (var s = 0; s < shards.Direct.Count; s++)
        {
            total += await shards.ScalarAsync<long>(s, "select count(*) from pg_prepared_xacts where database = current_database()");
        }

        return total;
    }

    // The operator's command after a server came back: its first tries may meet connections the restart broke.
    private static async Task<T> RetryAsync<T>(Func<Task<T>> action)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await action();
            }
            catch (Exception e) when (attempt < 5 && e is ShardKitException or Npgsql.NpgsqlException)
            {
                await Task.Delay(500);
            }
        }
    }

    // Resumes until the move is done. A resume that fails after the move reached Done (its last announcement met a
    // connection the restart broke) leaves nothing to do: the next one is refused with "nothing to resume".
    private static async Task<string> ResumeAsync(ShardedDataSource admin, string moveId, MoveOptions options)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await admin.Resharding.ResumeMoveAsync(moveId, options);
                return attempt == 1 ? "" : $" (after {attempt - 1} failed resume)";
            }
            catch (Exception e) when (attempt < 5 && e is ShardKitException or Npgsql.NpgsqlException)
            {
                await Task.Delay(500);
                var state = await RetryAsync(async () => (await admin.Resharding.GetMovesAsync()).Single(m => m.MoveId == moveId).State);
                if (state == MoveState.Done)
                {
                    return $" (a resume failed after Done: {e.GetType().Name}: {e.Message})";
                }
            }
        }
    }

    private static Task RetryAsync(Func<Task> action) => RetryAsync(async () =>
    {
        await action();
        return true;
    });

    // Connections opened before a server restarted are dead; pools hand out fresh ones from here on.
    private static void Forget(ShardedDataSource source)
    {
        foreach (var name in source.ShardNames)
        {
            source.GetShardDataSource(name).Clear();
        }
    }
}

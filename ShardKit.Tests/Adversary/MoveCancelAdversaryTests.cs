using System.Collections.Concurrent;
using System.Diagnostics;
using Dapper;
using ShardKit.Tests.Resharding;

namespace ShardKit.Tests.Adversary;

/// <summary>
/// Attacks on CancelMoveAsync of a move that a mover (another data source, as another process) runs right now: two
/// cancels at once, a cancel at each reported step under writers of the moving keys, a new move of the same buckets at
/// once after the cancel, a cancel stopped by its own token, a cancel racing a resume, a cancel racing the mover's own
/// token, a large copy cancelled mid-copy, a cancel while the freeze waits on a writer's open transaction. Each test
/// asserts what a user would expect; a failing test is a break.
/// </summary>
[TestFixture]
public sealed class MoveCancelAdversaryTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    private static MoveOptions Quick(Action<MoveOptions>? more = null)
    {
        var o = new MoveOptions { CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero, AnnounceWait = TimeSpan.Zero };
        more?.Invoke(o);
        return o;
    }

    private static Task<Exception?> CatchAsync(Func<Task> action) => ReshardingAdversaryTests.CatchAsync(action);

    private static string Describe(Exception? e) => e is null ? "(none)" : $"{e.GetType().Name}: {e.Message}";

    private static bool RefusedAsSwitched(Exception? e) => e is ShardMoveException && e.Message.Contains("cannot be cancelled", StringComparison.Ordinal);

    private static async Task<MoveInfo> MoveAsync(ShardedDataSource source, string id) =>
        (await source.Resharding.GetMovesAsync()).Single(m => m.MoveId == id);

    // The seeded keys of the moving buckets, plus fresh keys of those buckets that do not exist yet (the writers insert them).
    private static long[] MovingKeys(ShardedDataSource admin, IReadOnlyDictionary<long, int?> truth, IReadOnlyCollection<int> buckets, int fresh = 200)
    {
        var set = buckets.ToHashSet();
        var keys = truth.Keys.Where(k => set.Contains(admin.Map.BucketOf(k))).ToList();
        for (long k = 7_000_000; fresh > 0; k++)
        {
            if (set.Contains(admin.Map.BucketOf(k)))
            {
                keys.Add(k);
                fresh--;
            }
        }

        return [.. keys];
    }

    // MoveTests.AssertPlacedAsync's checks, with the values compared by key (NUnit's EquivalentTo is quadratic: minutes on 50k rows).
    private static async Task AssertPlacedAsync(ReshardingShards shards, ShardedDataSource source, IReadOnlyDictionary<long, int?> truth)
    {
        await source.Resharding.RefreshMapAsync();
        var rows = await shards.AllRowsAsync();
        var duplicates = rows.GroupBy(r => r.Id).Where(g => g.Count() > 1).Select(g => $"{g.Key} on {string.Join("+", g.Select(r => "s" + r.Shard))}").ToList();
        Assert.That(duplicates, Is.Empty, "a row on two shards");
        var misplaced = rows.Where(r => source.Map.ShardFor(r.Id) != $"s{r.Shard}").Select(r => $"{r.Id} on s{r.Shard}").ToList();
        Assert.That(misplaced, Is.Empty, "a row on a shard that does not own its bucket");
        var byId = rows.GroupBy(r => r.Id).ToDictionary(g => g.Key, g => g.First().N);
        var wrong = truth.Where(t => byId.TryGetValue(t.Key, out var n) ? t.Value != n : t.Value is not null)
            .Select(t => $"{t.Key}: holds {(byId.TryGetValue(t.Key, out var n) ? n.ToString() : "no row")}, committed {t.Value?.ToString() ?? "no row"}").ToList();
        Assert.That(wrong, Is.Empty, "every committed write, and nothing else");
        Assert.That((await source.Resharding.AuditPlacementAsync()).Sum(a => a.Rows), Is.EqualTo(0), "audit");
        Assert.That(await shards.LeftoversAsync(), Is.EqualTo(0), "no replication slot or publication left");
    }

    private static void DumpLogs(ReshardingShards shards, string? id, int last = 40)
    {
        var lines = shards.Logs.Logs.Where(l => id is null || l.Message.Contains(id, StringComparison.Ordinal)).Select(l => $"    [{l.EventId}] {l.Message}").ToList();
        foreach (var line in lines.Skip(Math.Max(0, lines.Count - last)))
        {
            TestContext.Out.WriteLine(line.Length > 400 ? line[..400] : line);
        }
    }

    // Blocks the caller (a progress handler: the mover's own thread) until a cancel has marked the move, i.e. has found
    // the mover running and is now stopping it. Returns how long that took, or -1.
    private static long WaitForCancelMark(ReshardingShards shards, string id, TimeSpan timeout)
    {
        using var catalog = new Npgsql.NpgsqlConnection(shards.Direct[0]);
        catalog.Open();
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (catalog.ExecuteScalar<string?>("select error from shardkit.move where id = @id", new { id }) is { } mark
                && mark.Contains("cancel requested", StringComparison.Ordinal))
            {
                return clock.ElapsedMilliseconds;
            }

            Thread.Sleep(20);
        }

        return -1;
    }

    // Every move that is neither Done nor Cancelled must be finishable by ResumeMoveAsync.
    private static async Task ResumeOpenMovesAsync(ShardedDataSource admin)
    {
        foreach (var m in (await admin.Resharding.GetMovesAsync()).Where(m => m.State is not (MoveState.Done or MoveState.Cancelled)))
        {
            var error = await CatchAsync(() => admin.Resharding.ResumeMoveAsync(m.MoveId, Quick()).WaitAsync(TimeSpan.FromMinutes(3)));
            Assert.That(error, Is.Null, $"resuming the unfinished move {m.MoveId} ({m.State}, error '{m.Error}'): {Describe(error)}");
        }
    }

    private static async Task LogMovesAsync(ShardedDataSource admin)
    {
        foreach (var m in await admin.Resharding.GetMovesAsync())
        {
            TestContext.Out.WriteLine($"  {m.MoveId} {m.Source}->{m.Target} {m.State} rows {m.RowsCopied} error '{m.Error}'");
        }
    }

    private static void AssertWriters(KeyWriters writers, long minOps = 20)
    {
        Assert.That(writers.Errors, Is.Empty, "writers of the moving keys failed or saw a wrong row count:\n" + string.Join("\n", writers.Errors.Take(8)));
        Assert.That(Interlocked.Read(ref writers.Operations), Is.GreaterThanOrEqualTo(minOps), "the writers hardly wrote");
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 1. Two operators cancel the same running move at the same moment, from two data sources.
    [Test]
    public async Task Two_cancels_at_once_from_two_data_sources_both_succeed_and_leave_nothing()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 3000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(24).ToArray();
        await using var writers = new KeyWriters(shards.NewSource(), MovingKeys(admin, truth, buckets), truth);
        writers.Start();
        var opA = shards.NewSource();
        var opB = shards.NewSource();
        Task<Exception?>? cancelA = null, cancelB = null;
        var cancelStarted = Stopwatch.StartNew();
        long markSeen = -1;

        var move = CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick(o => { o.CopyScanBytes = 1; o.Parallelism = 1; }),
            new InlineProgress(p =>
            {
                if (p.State == MoveState.Copying && p.RowsCopied > 0 && cancelA is null)
                {
                    var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    cancelA = Task.Run(async () => { await go.Task; return await CatchAsync(() => opA.Resharding.CancelMoveAsync(p.MoveId)); });
                    cancelB = Task.Run(async () => { await go.Task; return await CatchAsync(() => opB.Resharding.CancelMoveAsync(p.MoveId)); });
                    cancelStarted.Restart();
                    go.SetResult();
                    markSeen = WaitForCancelMark(shards, p.MoveId, TimeSpan.FromSeconds(20)); // a cancel is stopping this mover mid-copy
                    Thread.Sleep(100);
                }
            })));

        var moveError = await move.WaitAsync(TimeSpan.FromMinutes(3));
        Assert.That(cancelA, Is.Not.Null, "no copy progress reported");
        var errorA = await cancelA!.WaitAsync(TimeSpan.FromMinutes(2));
        var errorB = await cancelB!.WaitAsync(TimeSpan.FromMinutes(2));
        var took = cancelStarted.Elapsed;
        await Task.Delay(300);
        await writers.StopAsync();
        TestContext.Out.WriteLine($"move: {Describe(moveError)}\ncancel A: {Describe(errorA)}\ncancel B: {Describe(errorB)}\nboth cancels done after {took.TotalMilliseconds:F0} ms (mark after {markSeen} ms); writer ops {writers.Operations}");
        await LogMovesAsync(admin);

        Assert.That(errorA, Is.Null, "cancel A");
        Assert.That(errorB, Is.Null, "cancel B (cancelling again is harmless)");
        Assert.That(moveError, Is.InstanceOf<ShardMoveException>(), "the stopped mover: " + Describe(moveError));
        Assert.That(moveError!.Message, Does.Contain("was cancelled while"));
        var info = (await admin.Resharding.GetMovesAsync()).Single();
        Assert.That(info.State, Is.EqualTo(MoveState.Cancelled));
        Assert.That(info.Error, Is.Null, "a cancelled move keeps no error (no stale 'cancel requested' mark)");
        AssertWriters(writers);
        writers.MergeInto(truth);
        await AssertPlacedAsync(shards, admin, truth);
        Assert.That(admin.Map.Buckets!.BucketsOf(0), Is.SupersetOf(buckets), "the buckets stay on the source");
        Assert.That(await CatchAsync(() => opA.Resharding.CancelMoveAsync(info.MoveId)), Is.Null, "a third cancel is harmless");

        // Then two cancels a little apart, of a move that no mover runs (stopped by its token mid-copy): the second may
        // find the first holding the move's lock, take it for a mover, and mark the move while the first finishes.
        var rounds = new List<string>();
        foreach (var offset in new[] { 0, 5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 75, 100, 150, 250 })
        {
            using var stop = new CancellationTokenSource();
            string? id = null;
            var stopped = await CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick(o => o.CopyScanBytes = 1),
                new InlineProgress(p =>
                {
                    id = p.MoveId;
                    if (p.State == MoveState.Copying && p.RowsCopied > 0)
                    {
                        stop.Cancel();
                    }
                }), stop.Token));
            Assert.That(stopped, Is.InstanceOf<OperationCanceledException>(), Describe(stopped));
            var a = Task.Run(() => CatchAsync(() => opA.Resharding.CancelMoveAsync(id!)));
            await Task.Delay(offset);
            var b = Task.Run(() => CatchAsync(() => opB.Resharding.CancelMoveAsync(id!)));
            var (ea, eb) = (await a.WaitAsync(TimeSpan.FromMinutes(2)), await b.WaitAsync(TimeSpan.FromMinutes(2)));
            var m = await MoveAsync(admin, id!);
            var line = $"stopped move, second cancel {offset} ms later: A {Describe(ea)} | B {Describe(eb)} -> {m.State} '{m.Error}'";
            rounds.Add(line);
            TestContext.Out.WriteLine(line);
        }

        Assert.That(rounds.Where(r => !r.EndsWith("A (none) | B (none) -> Cancelled ''", StringComparison.Ordinal)), Is.Empty,
            "two cancels of a stopped move: both succeed, the move is Cancelled with no error");
        await AssertPlacedAsync(shards, admin, truth);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 2. A cancel from another data source at each step progress reports, while 8 writers insert, update and delete the
    // moving keys. Whatever wins, the library's own calls finish what is left and every committed write is where its map
    // says, once.
    [TestCase(MoveState.Copying, 0)]
    [TestCase(MoveState.CatchingUp, 0)]
    [TestCase(MoveState.Switching, 0)]
    public async Task A_cancel_from_another_source_at_each_reported_step_under_writers_loses_nothing(MoveState at, int delayMs)
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 3000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(16).ToArray();
        await using var writers = new KeyWriters(shards.NewSource(), MovingKeys(admin, truth, buckets), truth);
        writers.Start();
        await Task.Delay(200);
        var operatorSource = shards.NewSource();
        Task<Exception?>? cancel = null;
        var sw = new Stopwatch();

        var move = CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1",
            Quick(o => { o.CopyScanBytes = 1; o.CleanupDelay = TimeSpan.FromMilliseconds(500); }),
            new InlineProgress(p =>
            {
                if (p.State == at && (at != MoveState.Copying || p.RowsCopied > 0) && cancel is null)
                {
                    cancel = Task.Run(async () =>
                    {
                        await Task.Delay(delayMs);
                        sw.Start();
                        var e = await CatchAsync(() => operatorSource.Resharding.CancelMoveAsync(p.MoveId));
                        sw.Stop();
                        return e;
                    });
                    if (at == MoveState.Copying)
                    {
                        // The copy has scans left: hold it until the cancel is stopping it.
                        Assert.That(WaitForCancelMark(shards, p.MoveId, TimeSpan.FromSeconds(20)), Is.GreaterThanOrEqualTo(0), "the cancel did not mark the move");
                    }
                }
            })));

        var moveError = await move.WaitAsync(TimeSpan.FromMinutes(3));
        Assert.That(cancel, Is.Not.Null, $"no {at} report");
        var cancelError = await cancel!.WaitAsync(TimeSpan.FromMinutes(2));
        TestContext.Out.WriteLine($"move: {Describe(moveError)}\ncancel ({sw.ElapsedMilliseconds} ms): {Describe(cancelError)}");
        await LogMovesAsync(admin);

        if (cancelError is null)
        {
            Assert.That(moveError, Is.InstanceOf<ShardMoveException>(), "a cancelled mover stops with a typed error: " + Describe(moveError));
            // (A scan that was already under way may finish first: the cancel ends only working sessions, every 100 ms.)
            Assert.That(moveError!.Message, Does.Contain("was cancelled while"));
            var info = (await admin.Resharding.GetMovesAsync()).Single();
            Assert.That(info.State, Is.EqualTo(MoveState.Cancelled));
            Assert.That(info.Error, Is.Null);
        }
        else
        {
            Assert.That(at, Is.Not.EqualTo(MoveState.Copying), "a cancel mid-copy must win: " + Describe(cancelError));
            Assert.That(RefusedAsSwitched(cancelError), Is.True, "the only refusal is 'switched already': " + Describe(cancelError));
            if (moveError is not null)
            {
                ReshardingAdversaryTests.AssertClear(moveError, "the running move");
            }
        }

        await ResumeOpenMovesAsync(admin);
        await Task.Delay(300);
        await writers.StopAsync();
        TestContext.Out.WriteLine($"writer ops {writers.Operations}");
        AssertWriters(writers);
        writers.MergeInto(truth);
        await AssertPlacedAsync(shards, admin, truth);
        var final = (await admin.Resharding.GetMovesAsync()).Single();
        Assert.That(final.State, Is.EqualTo(cancelError is null ? MoveState.Cancelled : MoveState.Done));
        Assert.That(admin.Map.Buckets!.BucketsOf(cancelError is null ? 0 : 1), Is.SupersetOf(buckets));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 3. The operator cancels a running move and at once (the cancelled mover may still be unwinding) moves the same
    // buckets again; the new move must run and leave every row once, on its owner.
    [Test]
    public async Task A_new_move_of_the_same_buckets_right_after_the_cancel_returns_runs_cleanly()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 3000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(24).ToArray();
        await using var writers = new KeyWriters(shards.NewSource(), MovingKeys(admin, truth, buckets), truth);
        writers.Start();
        var operatorSource = shards.NewSource();
        var cancelled = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        Task? cancel = null;

        var first = CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick(o => { o.CopyScanBytes = 1; o.Parallelism = 2; }),
            new InlineProgress(p =>
            {
                if (p.State == MoveState.Copying && p.RowsCopied > 0 && cancel is null)
                {
                    cancel = Task.Run(async () =>
                    {
                        await operatorSource.Resharding.CancelMoveAsync(p.MoveId);
                        cancelled.TrySetResult(p.MoveId);
                    });
                    _ = cancel.ContinueWith(t => cancelled.TrySetException(t.Exception!), TaskContinuationOptions.OnlyOnFaulted);
                    WaitForCancelMark(shards, p.MoveId, TimeSpan.FromSeconds(20)); // the cancel stops this mover mid-copy
                }
            })));

        var firstId = await cancelled.Task.WaitAsync(TimeSpan.FromMinutes(2));
        // At once, without waiting for the first mover's call to return.
        var second = await CatchAsync(() => operatorSource.Resharding.MoveBucketsAsync(buckets, "s1", Quick(o => o.Parallelism = 2))
            .WaitAsync(TimeSpan.FromMinutes(3)));
        var firstError = await first.WaitAsync(TimeSpan.FromMinutes(2));
        await Task.Delay(300);
        await writers.StopAsync();
        TestContext.Out.WriteLine($"first mover: {Describe(firstError)}\nsecond move: {Describe(second)}\nwriter ops {writers.Operations}");
        await LogMovesAsync(admin);

        Assert.That(second, Is.Null, "the new move of the same buckets");
        Assert.That(firstError, Is.InstanceOf<ShardMoveException>(), Describe(firstError));
        Assert.That((await MoveAsync(admin, firstId)).State, Is.EqualTo(MoveState.Cancelled));
        Assert.That((await admin.Resharding.GetMovesAsync()).Count(m => m.State == MoveState.Done), Is.EqualTo(1));
        AssertWriters(writers);
        writers.MergeInto(truth);
        await AssertPlacedAsync(shards, admin, truth);
        Assert.That(admin.Map.Buckets!.BucketsOf(1), Is.SupersetOf(buckets));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 4. A cancel whose own token fires while it waits for the mover to stop. The user gave up on the cancel: the move
    // must then be as if the cancel had not come (it finishes, or it resumes), or cancelled, never stuck in between,
    // and the mover must not say it was cancelled when nothing undid it.
    [Test]
    public async Task A_cancel_stopped_by_its_own_token_leaves_the_move_resumable_or_cancelled()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 2000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(24).ToArray();
        var operatorSource = shards.NewSource();
        using var giveUp = new CancellationTokenSource();
        Task<Exception?>? cancel = null;
        var cancelClock = new Stopwatch();
        string? id = null;
        long markSeen = -1, slotGoneAfter = -1;

        var move = CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick(o => { o.CopyScanBytes = 1; o.Parallelism = 1; }),
            new InlineProgress(p =>
            {
                if (p.State == MoveState.Copying && p.RowsCopied > 0 && cancel is null)
                {
                    // The mover is busy (a slow progress handler) while the cancel tries to stop it; the operator gives up
                    // on the cancel (its token) while it waits for the mover.
                    id = p.MoveId;
                    cancelClock.Start();
                    cancel = Task.Run(async () =>
                    {
                        var e = await CatchAsync(() => operatorSource.Resharding.CancelMoveAsync(p.MoveId, giveUp.Token));
                        cancelClock.Stop();
                        return e;
                    });
                    // Wait until the cancel has marked the move (it then stops the running mover), then a little more.
                    markSeen = WaitForCancelMark(shards, p.MoveId, TimeSpan.FromSeconds(20));
                    // The cancel drops the slot first (its documented first step of stopping a mover); the operator gives
                    // up after that, while the cancel still waits for this mover.
                    using (var source = new Npgsql.NpgsqlConnection(shards.Direct[0]))
                    {
                        source.Open();
                        var clock = Stopwatch.StartNew();
                        while (clock.Elapsed < TimeSpan.FromSeconds(10)
                               && source.ExecuteScalar<long>("select count(*) from pg_replication_slots where slot_name = @n", new { n = "shardkit_move_" + p.MoveId }) > 0)
                        {
                            Thread.Sleep(20);
                        }

                        slotGoneAfter = markSeen + clock.ElapsedMilliseconds;
                    }

                    Thread.Sleep(200);
                    giveUp.Cancel();
                    Thread.Sleep(700);
                }
            })));

        var moveError = await move.WaitAsync(TimeSpan.FromMinutes(3));
        Assert.That(cancel, Is.Not.Null, "no copy progress reported");
        var cancelError = await cancel!.WaitAsync(TimeSpan.FromMinutes(2));
        var afterMover = await MoveAsync(admin, id!);
        TestContext.Out.WriteLine($"cancel's mark seen after {markSeen} ms, slot gone after {slotGoneAfter} ms; cancel returned after {cancelClock.ElapsedMilliseconds} ms: {Describe(cancelError)}\nmove: {Describe(moveError)}");
        TestContext.Out.WriteLine($"slots on s0: {await shards.ScalarAsync<long>(0, "select count(*) from pg_replication_slots where database = current_database()")}");
        await LogMovesAsync(admin);

        Assert.That(cancelError, Is.InstanceOf<OperationCanceledException>(), "the cancel honours its token: " + Describe(cancelError));
        Assert.That(markSeen, Is.GreaterThanOrEqualTo(0), "the cancel never marked the move (it did not reach the running mover)");
        Assert.That(cancelClock.ElapsedMilliseconds, Is.LessThan(slotGoneAfter + 3000), "the cancel stops soon after its token fires");

        // Whatever the mover said, bring the move to an end with the library's calls: resume if it is not finished.
        Exception? resumeError = null;
        if (afterMover.State is not (MoveState.Done or MoveState.Cancelled))
        {
            resumeError = await CatchAsync(() => admin.Resharding.ResumeMoveAsync(id!, Quick()).WaitAsync(TimeSpan.FromMinutes(3)));
            TestContext.Out.WriteLine($"resume: {Describe(resumeError)}");
            if (resumeError is not null)
            {
                var cancelAgain = await CatchAsync(() => admin.Resharding.CancelMoveAsync(id!));
                TestContext.Out.WriteLine($"cancel again: {Describe(cancelAgain)}");
                Assert.That(cancelAgain, Is.Null, "cancelling again cleans up");
            }
        }

        DumpLogs(shards, id, 25);
        await AssertPlacedAsync(shards, admin, truth);
        Assert.That(afterMover.Error ?? "", Does.Not.Contain("cancel requested"), "a cancel that gave up leaves no mark on the move");
        if (moveError is not null)
        {
            Assert.That(moveError.Message, Does.Not.Contain("was cancelled while"), "nothing undid the move: the mover must not say it was cancelled");
        }

        Assert.That(resumeError, Is.Null,
            $"a cancel that gave up (its token) left move {id} ({afterMover.State}) unresumable; the mover had said: {Describe(moveError)}; resume said: {Describe(resumeError)}");
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 5. A stopped move: one operator resumes it while another cancels it, at several offsets, under writers. The cancel
    // wins unless the resume switched first; the loser says so clearly; the placement is right at the end.
    [Test]
    public async Task A_cancel_racing_a_resume_from_two_other_sources_ends_cleanly()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 3000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(16).ToArray();
        await using var writers = new KeyWriters(shards.NewSource(), MovingKeys(admin, truth, buckets), truth);
        writers.Start();
        var resumer = shards.NewSource();
        var canceller = shards.NewSource();
        var outcomes = new List<string>();
        (MoveState StopAt, int Offset)[] rounds = [(MoveState.Copying, 0), (MoveState.CatchingUp, 30), (MoveState.Copying, 150), (MoveState.CatchingUp, 600), (MoveState.Copying, 1200), (MoveState.CatchingUp, 2500)];

        foreach (var (stopAt, offset) in rounds)
        {
            await admin.Resharding.RefreshMapAsync();
            var from = admin.Map.Buckets!.ShardOfBucket(buckets[0]);
            var to = from == 0 ? "s1" : "s0";
            using var stop = new CancellationTokenSource();
            string? id = null;
            var stopped = await CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, to, Quick(o => o.CopyScanBytes = 1),
                new InlineProgress(p =>
                {
                    id = p.MoveId;
                    if (p.State == stopAt && (stopAt != MoveState.Copying || p.RowsCopied > 0))
                    {
                        stop.Cancel();
                    }
                }), stop.Token));
            Assert.That(id, Is.Not.Null, $"no progress before the move ended ({stopAt}, offset {offset} ms): {Describe(stopped)}");
            Assert.That(stopped, Is.InstanceOf<OperationCanceledException>(), $"the move stops at its token ({stopAt}): {Describe(stopped)}");
            var before = await MoveAsync(admin, id!);

            var resume = Task.Run(() => CatchAsync(() => resumer.Resharding.ResumeMoveAsync(id!, Quick())));
            await Task.Delay(offset);
            var cancel = Task.Run(() => CatchAsync(() => canceller.Resharding.CancelMoveAsync(id!)));
            var resumeError = await resume.WaitAsync(TimeSpan.FromMinutes(3));
            var cancelError = await cancel.WaitAsync(TimeSpan.FromMinutes(3));
            var after = await MoveAsync(admin, id!);
            var line = $"stopped at {before.State}, offset {offset} ms: resume {Describe(resumeError)} | cancel {Describe(cancelError)} -> {after.State} '{after.Error}'";
            outcomes.Add(line);
            TestContext.Out.WriteLine(line);

            if (resumeError is not null)
            {
                ReshardingAdversaryTests.AssertClear(resumeError, "the losing resume");
            }

            if (cancelError is null)
            {
                Assert.That(after.State, Is.EqualTo(MoveState.Cancelled), line);
                Assert.That(after.Error, Is.Null, line);
                Assert.That(resumeError, Is.Not.Null, "a resume cannot have finished a cancelled move: " + line);
            }
            else
            {
                Assert.That(RefusedAsSwitched(cancelError), Is.True, "the cancel may only lose to a switch: " + line);
                Assert.That(resumeError, Is.Null, "the cancel lost to a switch, so the resume switched and finishes: " + line);
                Assert.That(after.State, Is.EqualTo(MoveState.Done), line);
            }
        }

        await ResumeOpenMovesAsync(admin);
        await Task.Delay(300);
        await writers.StopAsync();
        TestContext.Out.WriteLine($"writer ops {writers.Operations}");
        await LogMovesAsync(admin);
        AssertWriters(writers);
        writers.MergeInto(truth);
        await AssertPlacedAsync(shards, admin, truth);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 6. The mover's own token fires mid-copy at about the moment another source's cancel arrives (before, with, after).
    // The cancel must win (nothing switched), and then a real move of the same buckets must run and place every row once.
    [Test]
    public async Task A_cancel_racing_the_movers_own_token_mid_copy_wins_and_the_buckets_move_again_later()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 3000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(24).ToArray();
        await using var writers = new KeyWriters(shards.NewSource(), MovingKeys(admin, truth, buckets), truth);
        writers.Start();
        var operatorSource = shards.NewSource();

        foreach (var tokenAfterMs in new[] { -1, 0, 20, 150 })
        {
            using var stop = new CancellationTokenSource();
            Task<Exception?>? cancel = null;
            string? id = null;
            var moveError = await CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick(o => { o.CopyScanBytes = 1; o.Parallelism = 2; }),
                new InlineProgress(p =>
                {
                    if (p.State == MoveState.Copying && p.RowsCopied > 0 && cancel is null)
                    {
                        id = p.MoveId;
                        if (tokenAfterMs < 0)
                        {
                            stop.Cancel(); // the token first, the cancel right behind it
                        }

                        cancel = Task.Run(() => CatchAsync(() => operatorSource.Resharding.CancelMoveAsync(p.MoveId)));
                        if (tokenAfterMs >= 0)
                        {
                            Thread.Sleep(tokenAfterMs);
                            stop.Cancel();
                        }
                    }
                }), stop.Token).WaitAsync(TimeSpan.FromMinutes(3)));
            Assert.That(cancel, Is.Not.Null, "no copy progress");
            var cancelError = await cancel!.WaitAsync(TimeSpan.FromMinutes(2));
            var info = await MoveAsync(admin, id!);
            TestContext.Out.WriteLine($"token after {tokenAfterMs} ms: move {Describe(moveError)} | cancel {Describe(cancelError)} -> {info.State} '{info.Error}'");
            Assert.That(cancelError, Is.Null, $"token after {tokenAfterMs} ms: the cancel of an unswitched move");
            Assert.That(moveError, Is.InstanceOf<OperationCanceledException>().Or.InstanceOf<ShardMoveException>(), Describe(moveError));
            Assert.That(info.State, Is.EqualTo(MoveState.Cancelled));
            Assert.That(info.Error, Is.Null);
            Assert.That(await shards.LeftoversAsync(), Is.EqualTo(0), "no slot or publication after the cancel");
        }

        var result = await admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick(o => o.Parallelism = 2)).WaitAsync(TimeSpan.FromMinutes(3));
        await Task.Delay(300);
        await writers.StopAsync();
        TestContext.Out.WriteLine($"final move {result.MoveId}: {result.RowsCopied} rows; writer ops {writers.Operations}");
        AssertWriters(writers);
        writers.MergeInto(truth);
        await AssertPlacedAsync(shards, admin, truth);
        Assert.That(admin.Map.Buckets!.BucketsOf(1), Is.SupersetOf(buckets));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 7. A large copy (50k rows, many small scans, two at once) cancelled from another source mid-copy: the cancel must
    // stop it promptly (the copy must not run to its end first) and leave nothing behind.
    [Test]
    public async Task A_large_copy_cancelled_mid_copy_stops_promptly()
    {
        await using var shards = await ReshardingShards.CreateAsync(2, buckets: 256);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await BulkSeedAsync(shards, admin, 50_000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(120).ToArray();
        var movingRows = truth.Keys.Count(k => buckets.Contains(admin.Map.BucketOf(k)));
        var operatorSource = shards.NewSource();
        Task<Exception?>? cancel = null;
        var cancelClock = new Stopwatch();
        var moverEndsAfterCancel = new Stopwatch();
        long rowsAtCancel = 0, lastRows = 0;
        var statesAfterCancel = new ConcurrentQueue<MoveState>();

        var move = CatchAsync(async () =>
        {
            try
            {
                await admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick(o => { o.CopyScanBytes = 1; o.Parallelism = 2; }),
                    new InlineProgress(p =>
                    {
                        Interlocked.Exchange(ref lastRows, p.RowsCopied);
                        if (cancel is not null)
                        {
                            statesAfterCancel.Enqueue(p.State);
                        }

                        if (p.State == MoveState.Copying && p.RowsCopied > 0 && cancel is null)
                        {
                            rowsAtCancel = p.RowsCopied;
                            cancelClock.Start();
                            moverEndsAfterCancel.Start();
                            cancel = Task.Run(async () =>
                            {
                                var e = await CatchAsync(() => operatorSource.Resharding.CancelMoveAsync(p.MoveId));
                                cancelClock.Stop();
                                return e;
                            });
                        }
                    }));
            }
            finally
            {
                moverEndsAfterCancel.Stop();
            }
        });

        var moveError = await move.WaitAsync(TimeSpan.FromMinutes(5));
        Assert.That(cancel, Is.Not.Null, "no copy progress reported");
        var cancelError = await cancel!.WaitAsync(TimeSpan.FromMinutes(2));
        TestContext.Out.WriteLine($"moving rows {movingRows}; rows when the cancel started {rowsAtCancel}; last rows reported {lastRows}");
        TestContext.Out.WriteLine($"cancel took {cancelClock.ElapsedMilliseconds} ms: {Describe(cancelError)}; the mover ended {moverEndsAfterCancel.ElapsedMilliseconds} ms after the cancel began: {Describe(moveError)}");
        TestContext.Out.WriteLine($"states reported after the cancel began: {string.Join(",", statesAfterCancel.Distinct())}");
        await LogMovesAsync(admin);

        Assert.That(cancelError, Is.Null);
        Assert.That(moveError, Is.InstanceOf<ShardMoveException>(), Describe(moveError));
        Assert.That(moveError!.Message, Does.Contain("was cancelled while Copying"));
        Assert.That(statesAfterCancel, Does.Not.Contain(MoveState.CatchingUp).And.Not.Contain(MoveState.Switching), "the copy ran to its end despite the cancel");
        Assert.That(cancelClock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), "the cancel of a running copy is prompt");
        Assert.That((await admin.Resharding.GetMovesAsync()).Single().State, Is.EqualTo(MoveState.Cancelled));
        await AssertPlacedAsync(shards, admin, truth);
    }

    private static async Task<Dictionary<long, int?>> BulkSeedAsync(ReshardingShards shards, ShardedDataSource admin, int count)
    {
        var truth = new Dictionary<long, int?>();
        var payload = new string('x', 400);
        var rows = Enumerable.Range(1, count).Select(i => (Id: 3_000_000L + i, N: i)).ToList();
        for (var s = 0; s < shards.Direct.Count; s++)
        {
            var mine = rows.Where(r => admin.Map.ShardFor(r.Id) == $"s{s}").ToList();
            await using var conn = await shards.OpenAsync(s);
            await conn.ExecuteAsync("insert into items (id, payload, n) select i, @payload, n from unnest(@ids, @ns) as u(i, n)",
                new { payload, ids = mine.Select(r => r.Id).ToArray(), ns = mine.Select(r => r.N).ToArray() }, commandTimeout: 300);
            await conn.ExecuteAsync("analyze items");
            foreach (var r in mine)
            {
                truth[r.Id] = r.N;
            }
        }

        return truth;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 8. The freeze waits on a writer's open transaction of a moving key (FreezeLockTimeout long) when another source
    // cancels. The cancel must complete once the mover lets go (well within its 30 s), the writer's transaction must
    // commit, and nothing may be lost.
    [Test]
    public async Task A_cancel_while_the_freeze_waits_on_a_writers_open_transaction_completes_and_keeps_the_write()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 2000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(8).ToArray();
        var keys = MovingKeys(admin, truth, buckets);
        var held = keys[0];
        await using var writers = new KeyWriters(shards.NewSource(), keys.Skip(1).ToArray(), truth);
        writers.Start();
        var operatorSource = shards.NewSource();
        Task? holding = null;
        Task<Exception?>? cancel = null;
        var cancelClock = new Stopwatch();
        var holderCommitted = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var holderOpen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        var move = CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1",
            Quick(o => { o.FreezeLockTimeout = TimeSpan.FromSeconds(12); o.FreezeAttempts = 2; }),
            new InlineProgress(p =>
            {
                if (p.State == MoveState.CatchingUp && holding is null)
                {
                    // A user's transaction (bypassing ShardKit, on the owner) holds a moving key for 6 s.
                    holding = Task.Run(async () =>
                    {
                        try
                        {
                            await using var conn = await shards.OpenAsync(0);
                            await using var tx = await conn.BeginTransactionAsync();
                            await conn.ExecuteAsync("update items set n = 424242 where id = @held", new { held }, tx);
                            holderOpen.TrySetResult();
                            await Task.Delay(6000);
                            await tx.CommitAsync();
                            holderCommitted.TrySetResult(true);
                        }
                        catch (Exception e)
                        {
                            holderOpen.TrySetResult();
                            holderCommitted.TrySetException(e);
                        }
                    });
                    holderOpen.Task.Wait(TimeSpan.FromSeconds(10));
                }

                if (p.State == MoveState.Switching && cancel is null)
                {
                    cancel = Task.Run(async () =>
                    {
                        await Task.Delay(1500); // the freeze (or the hold for the verify) now waits on the open transaction
                        cancelClock.Start();
                        var e = await CatchAsync(() => operatorSource.Resharding.CancelMoveAsync(p.MoveId));
                        cancelClock.Stop();
                        return e;
                    });
                }
            })));

        var moveError = await move.WaitAsync(TimeSpan.FromMinutes(3));
        Assert.That(holding, Is.Not.Null, "no CatchingUp report");
        Assert.That(cancel, Is.Not.Null, "no Switching report");
        var cancelError = await cancel!.WaitAsync(TimeSpan.FromMinutes(2));
        var holderError = await CatchAsync(() => holderCommitted.Task.WaitAsync(TimeSpan.FromMinutes(1)));
        TestContext.Out.WriteLine($"move: {Describe(moveError)}\ncancel ({cancelClock.ElapsedMilliseconds} ms): {Describe(cancelError)}\nheld transaction: {Describe(holderError)}");
        await LogMovesAsync(admin);
        Assert.That(holderError, Is.Null, "the user's open transaction commits");
        truth[held] = 424242;

        Assert.That(cancelError, Is.Null, "the cancel completes once the mover lets go");
        Assert.That(cancelClock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(25)));
        Assert.That(moveError, Is.InstanceOf<ShardMoveException>(), Describe(moveError));
        await Task.Delay(300);
        await writers.StopAsync();
        TestContext.Out.WriteLine($"writer ops {writers.Operations}");
        AssertWriters(writers);
        writers.MergeInto(truth);
        await AssertPlacedAsync(shards, admin, truth);
        Assert.That((await admin.Resharding.GetMovesAsync()).Single().State, Is.EqualTo(MoveState.Cancelled));
        Assert.That(admin.Map.Buckets!.BucketsOf(0), Is.SupersetOf(buckets));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 9. The cancel swept across the verify, the freeze and the switch: round after round a move of the same buckets
    // (back and forth), and another source cancels it a growing time after the Switching report, under 8 writers. Each
    // round either cancels (Cancelled, buckets stay) or is refused as switched (the move finishes); nothing else.
    [Test]
    public async Task A_cancel_swept_across_the_freeze_and_switch_either_wins_or_is_refused_as_switched()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 3000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(16).ToArray();
        await using var writers = new KeyWriters(shards.NewSource(), MovingKeys(admin, truth, buckets), truth);
        writers.Start();
        await Task.Delay(200);
        var operatorSource = shards.NewSource();
        var outcomes = new List<string>();

        // Calibration: how long from the Switching report to the Switched one under these writers (there and back: the
        // first move of a process is slower; the second counts).
        long span = 0;
        foreach (var (to, from) in new[] { ("s1", 0), ("s0", 1) })
        {
            var clock = Stopwatch.StartNew();
            long switchingAt = -1, switchedAt = -1;
            await admin.Resharding.MoveBucketsAsync(buckets, to, Quick(o => o.CleanupDelay = TimeSpan.FromMilliseconds(300)), new InlineProgress(p =>
            {
                if (p.State == MoveState.Switching && switchingAt < 0)
                {
                    switchingAt = clock.ElapsedMilliseconds;
                }

                if (p.State == MoveState.Switched && switchedAt < 0)
                {
                    switchedAt = clock.ElapsedMilliseconds;
                }
            })).WaitAsync(TimeSpan.FromMinutes(3));
            span = Math.Max(50, switchedAt - switchingAt);
            TestContext.Out.WriteLine($"calibration s{from}->{to}: Switching to Switched took {span} ms");
        }

        foreach (var delayMs in new[] { 0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0 }.Select(f => (int)(f * span)))
        {
            await admin.Resharding.RefreshMapAsync();
            var from = admin.Map.Buckets!.ShardOfBucket(buckets[0]);
            var to = from == 0 ? "s1" : "s0";
            Task<Exception?>? cancel = null;
            string? id = null;
            var moveError = await CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, to, Quick(o => o.CleanupDelay = TimeSpan.FromMilliseconds(300)),
                new InlineProgress(p =>
                {
                    id = p.MoveId;
                    if (p.State == MoveState.Switching && cancel is null)
                    {
                        cancel = Task.Run(async () =>
                        {
                            await Task.Delay(delayMs);
                            return await CatchAsync(() => operatorSource.Resharding.CancelMoveAsync(p.MoveId));
                        });
                    }
                })).WaitAsync(TimeSpan.FromMinutes(3)));
            Assert.That(cancel, Is.Not.Null, $"delay {delayMs}: no Switching report; move: {Describe(moveError)}");
            var cancelError = await cancel!.WaitAsync(TimeSpan.FromMinutes(2));
            var info = await MoveAsync(admin, id!);
            var line = $"delay {delayMs} ms ({from}->{to}): cancel {Describe(cancelError)} | move {Describe(moveError)} -> {info.State} '{info.Error}'";
            outcomes.Add(line);
            TestContext.Out.WriteLine(line);
            if (cancelError is null)
            {
                Assert.That(info.State, Is.EqualTo(MoveState.Cancelled), line);
                Assert.That(info.Error, Is.Null, line);
                Assert.That(moveError, Is.InstanceOf<ShardMoveException>(), line);
                Assert.That(moveError!.Message, Does.Contain("was cancelled while"), line);
            }
            else
            {
                Assert.That(RefusedAsSwitched(cancelError), Is.True, "the only refusal is 'switched already': " + line);
                Assert.That(info.Error ?? "", Does.Not.Contain("cancel requested"), "a refused cancel leaves no mark: " + line);
                if (moveError is not null)
                {
                    ReshardingAdversaryTests.AssertClear(moveError, "the running move");
                }

                await ResumeOpenMovesAsync(admin);
                Assert.That((await MoveAsync(admin, id!)).State, Is.EqualTo(MoveState.Done), line);
            }

            Assert.That(await shards.LeftoversAsync(), Is.EqualTo(0), "no slot or publication after the round: " + line);
        }

        await Task.Delay(300);
        await writers.StopAsync();
        TestContext.Out.WriteLine($"writer ops {writers.Operations}");
        AssertWriters(writers);
        writers.MergeInto(truth);
        await AssertPlacedAsync(shards, admin, truth);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 10. Cancels of a switched move (during its cleanup delay), from another source, over and over: each is refused,
    // none disturbs the mover (no slot drop, no ended session, no mark), and the move finishes Done with its rows placed.
    [Test]
    public async Task Cancels_of_a_switched_move_are_refused_and_do_not_disturb_its_mover()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 2000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(16).ToArray();
        await using var writers = new KeyWriters(shards.NewSource(), MovingKeys(admin, truth, buckets), truth);
        writers.Start();
        var operatorSource = shards.NewSource();
        Task<List<Exception?>>? cancels = null;

        var moveError = await CatchAsync(() => admin.Resharding.MoveBucketsAsync(buckets, "s1",
            Quick(o => { o.CleanupDelay = TimeSpan.FromSeconds(3); o.DeleteBatchSize = 50; o.DeletePause = TimeSpan.FromMilliseconds(20); }),
            new InlineProgress(p =>
            {
                if (p.State == MoveState.Switched && cancels is null)
                {
                    cancels = Task.Run(async () =>
                    {
                        var errors = new List<Exception?>();
                        for (var i = 0; i < 12; i++)
                        {
                            errors.Add(await CatchAsync(() => operatorSource.Resharding.CancelMoveAsync(p.MoveId)));
                            await Task.Delay(150);
                        }

                        return errors;
                    });
                }
            })).WaitAsync(TimeSpan.FromMinutes(3)));
        Assert.That(cancels, Is.Not.Null, "no Switched report: " + Describe(moveError));
        var cancelErrors = await cancels!.WaitAsync(TimeSpan.FromMinutes(2));
        await Task.Delay(300);
        await writers.StopAsync();
        TestContext.Out.WriteLine($"move: {Describe(moveError)}\ncancels: {string.Join(" | ", cancelErrors.Select(Describe).Distinct())}\nwriter ops {writers.Operations}");
        await LogMovesAsync(admin);

        Assert.That(moveError, Is.Null, "the switched move finishes despite the cancels");
        Assert.That(cancelErrors.All(RefusedAsSwitched), Is.True, "each cancel of a switched move is refused as such");
        var info = (await admin.Resharding.GetMovesAsync()).Single();
        Assert.That(info.State, Is.EqualTo(MoveState.Done));
        Assert.That(info.Error, Is.Null);
        AssertWriters(writers);
        writers.MergeInto(truth);
        await AssertPlacedAsync(shards, admin, truth);
        Assert.That(admin.Map.Buckets!.BucketsOf(1), Is.SupersetOf(buckets));
    }

    /// <summary>
    /// Writers that each own every n-th of the given keys and insert (absent), update (absolute value) or delete
    /// (present) them through ShardKit, checking each call touched exactly one row. A write counts only once its call
    /// returned without error; a key whose write failed is left out of the truth (its outcome is unknown) and written no
    /// more, and the failure fails the test.
    /// </summary>
    // Disposed at the end of each test, failed or not: writers left running after a failed assertion starved every
    // later test of the run of CPU and connections (a CI run's cascade of 30 s timeouts).
    private sealed class KeyWriters(ShardedDataSource app, long[] keys, IReadOnlyDictionary<long, int?> initial, int writers = 8) : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _tasks = [];
        private readonly ConcurrentDictionary<long, int?> _truth = new(keys.Select(k => KeyValuePair.Create(k, initial.GetValueOrDefault(k))));
        private readonly ConcurrentDictionary<long, byte> _unknown = new();

        public ConcurrentQueue<string> Errors { get; } = new();

        public long Operations;

        public void Start()
        {
            for (var w = 0; w < writers; w++)
            {
                var writer = w;
                _tasks.Add(Task.Run(() => RunAsync(writer)));
            }
        }

        public async Task StopAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_tasks).WaitAsync(TimeSpan.FromMinutes(1));
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                await StopAsync();
            }
            catch (Exception e) when (e is TimeoutException or OperationCanceledException or ShardKitException or Npgsql.NpgsqlException)
            {
                // The test failed already, or its writers' errors were asserted.
            }

            _stop.Dispose();
        }

        public void MergeInto(Dictionary<long, int?> truth)
        {
            foreach (var (key, n) in _truth)
            {
                if (_unknown.ContainsKey(key))
                {
                    truth.Remove(key);
                }
                else
                {
                    truth[key] = n;
                }
            }
        }

        private async Task RunAsync(int writer)
        {
            var mine = keys.Where((_, i) => i % writers == writer).ToArray();
            var random = new Random(1000 + writer);
            await using var db = app.CreateConnection();
            while (!_stop.IsCancellationRequested)
            {
                var key = mine[random.Next(mine.Length)];
                if (_unknown.ContainsKey(key))
                {
                    continue;
                }

                var current = _truth[key];
                var n = random.Next(1, 1_000_000);
                string op;
                int? after;
                string sql;
                if (current is null)
                {
                    (op, after, sql) = ("insert", n, "insert into items (id, payload, n) values (@Id, @Payload, @N)");
                }
                else if (random.Next(4) == 0)
                {
                    (op, after, sql) = ("delete", null, "delete from items where id = @Id");
                }
                else
                {
                    (op, after, sql) = ("update", n, "update items set n = @N, payload = @Payload where id = @Id");
                }

                try
                {
                    var affected = await db.ExecuteAsync(sql, new Item { Id = key, N = n, Payload = $"w{writer}" });
                    if (affected != 1)
                    {
                        _unknown[key] = 1;
                        Errors.Enqueue($"{op} of key {key} (holding {current?.ToString() ?? "no row"}) touched {affected} rows, not 1");
                        continue;
                    }

                    _truth[key] = after;
                    Interlocked.Increment(ref Operations);
                }
                catch (Exception e)
                {
                    _unknown[key] = 1;
                    Errors.Enqueue($"{op} of key {key} (holding {current?.ToString() ?? "no row"}) failed: {e.GetType().FullName}: {e.Message}");
                }

                await Task.Delay(random.Next(0, 3));
            }
        }
    }
}

using System.Collections.Concurrent;
using Dapper;

namespace ShardKit.Tests.Resharding;

[TestFixture]
public sealed class MoveTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    private static readonly MoveOptions Quick = new() { CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero };

    internal static async Task AssertPlacedAsync(ReshardingShards shards, ShardedDataSource source, IReadOnlyDictionary<long, int?> truth)
    {
        await source.Resharding.RefreshMapAsync();
        var rows = await shards.AllRowsAsync();
        var duplicates = rows.GroupBy(r => r.Id).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.That(duplicates, Is.Empty, "a row on two shards");
        var misplaced = rows.Where(r => source.Map.ShardFor(r.Id) != $"s{r.Shard}").Select(r => r.Id).ToList();
        Assert.That(misplaced, Is.Empty, "a row on a shard that does not own its bucket");
        var expected = truth.Where(t => t.Value is not null).ToDictionary(t => t.Key, t => t.Value!.Value);
        var actual = rows.Where(r => truth.ContainsKey(r.Id)).ToDictionary(r => r.Id, r => r.N);
        Assert.That(actual, Is.EquivalentTo(expected), "every committed write, and nothing else");
        Assert.That((await source.Resharding.AuditPlacementAsync()).Sum(a => a.Rows), Is.EqualTo(0));
        Assert.That(await shards.LeftoversAsync(), Is.EqualTo(0), "no replication slot or publication left");
    }

    internal static async Task<Dictionary<long, int?>> SeedRowsAsync(ShardedDataSource source, int count)
    {
        await using var db = source.CreateConnection();
        var items = Enumerable.Range(1, count).Select(i => new Item { Id = 1_000_000 + i, Payload = $"seed {i} 'quoted' ünïcode", N = i }).ToList();
        await db.ExecuteAsync("insert into items (id, payload, n) values (@Id, @Payload, @N)", items);
        return items.ToDictionary(i => i.Id, i => (int?)i.N);
    }

    // A move runs in one mover at a time: resuming it while it runs (here from another data source, as from another
    // process) is refused with a typed error that says what to do, and the running move finishes untouched.
    [Test]
    public async Task Resuming_a_move_while_it_runs_elsewhere_is_refused_and_the_move_finishes()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 500);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(4).ToArray();
        var switched = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = admin.Resharding.MoveBucketsAsync(buckets, "s1",
            new MoveOptions { CleanupDelay = TimeSpan.FromSeconds(3), AnnounceWait = TimeSpan.Zero, DeletePause = TimeSpan.Zero },
            new InlineProgress(p =>
            {
                if (p.State == MoveState.Switched)
                {
                    switched.TrySetResult(p.MoveId);
                }
            }));
        var id = await switched.Task.WaitAsync(TimeSpan.FromSeconds(60));

        var other = shards.NewSource();
        var error = Assert.ThrowsAsync<ShardMoveException>(() => other.Resharding.ResumeMoveAsync(id));
        Assert.That(error!.Message, Does.Contain("running in another mover"));
        Assert.That(error.MoveId, Is.EqualTo(id));

        var result = await running;
        Assert.That(result.MoveId, Is.EqualTo(id));
        Assert.That((await admin.Resharding.GetMovesAsync()).Single(m => m.MoveId == id).State, Is.EqualTo(MoveState.Done));
        await AssertPlacedAsync(shards, admin, truth);
        Assert.That(Assert.ThrowsAsync<ShardMoveException>(() => other.Resharding.ResumeMoveAsync(id))!.Message, Does.Contain("nothing to resume"),
            "once it ended, the lock is gone and the catalog's state answers");
    }

    [Test]
    public async Task A_move_under_concurrent_writers_loses_duplicates_and_resurrects_nothing()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 3000);
        var app = shards.NewSource();
        await using var writers = new MoveWriters(app, writers: 8, keys: 4000);
        writers.Start();
        await Task.Delay(300);

        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(8).ToArray();
        var states = new ConcurrentQueue<MoveState>();
        var result = await admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick, new InlineProgress(p => states.Enqueue(p.State)));
        await Task.Delay(300);
        await writers.StopAsync();

        Assert.That(writers.Errors, Is.Empty, string.Join("\n", writers.Errors.Select(e => e.ToString())));
        Assert.That(writers.Operations, Is.GreaterThan(100));
        Assert.That(result.Buckets, Is.EqualTo(buckets));
        Assert.That(result.RowsCopied, Is.GreaterThan(0));
        Assert.That(result.Pause, Is.GreaterThan(TimeSpan.Zero));
        Assert.That(states, Does.Contain(MoveState.Copying).And.Contain(MoveState.Switching).And.Contain(MoveState.Done));
        Assert.That(admin.Map.Buckets!.BucketsOf(1), Is.SupersetOf(buckets));
        foreach (var (key, n) in writers.Truth)
        {
            truth[key] = n;
        }

        await AssertPlacedAsync(shards, admin, truth);
        var move = (await admin.Resharding.GetMovesAsync()).Single();
        Assert.That(move.State, Is.EqualTo(MoveState.Done));
        Assert.That(move.PauseMs, Is.GreaterThan(0));
        // The source's fence says where the buckets went (its refusals name it); the target's rows name nothing.
        Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from shardkit.bucket_owner where bucket = any(@buckets) and moved_to = 's1' and not owned",
            new { buckets }), Is.EqualTo(buckets.Length));
        Assert.That(await shards.ScalarAsync<long>(1, "select count(*) from shardkit.bucket_owner where bucket = any(@buckets) and moved_to is null and owned",
            new { buckets }), Is.EqualTo(buckets.Length));
    }

    [Test]
    public async Task Fan_out_reads_during_a_move_return_every_row_once()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 3000);
        var app = shards.NewSource();
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(12).ToArray();
        var reads = 0;
        var wrong = new ConcurrentQueue<string>();
        using var done = new StopOnDispose();
        var reader = Task.Run(async () =>
        {
            await using var db = app.CreateConnection();
            while (!done.IsCancellationRequested)
            {
                var rows = (await db.AllShards().QueryAsync<Item>("select id, payload, n from items")).ToList();
                var streamed = new List<Item>();
                await foreach (var row in db.AllShards().QueryUnbufferedAsync<Item>("select id, payload, n from items"))
                {
                    streamed.Add(row);
                }

                // Untyped rows of the moved table alone are kept by its key column, also when they are per-key groups.
                var untyped = (await db.AllShards().QueryAsync("select id, payload, n from items")).Select(r => new Item { Id = (long)r.id }).ToList();
                var groups = (await db.AllShards().QueryAsync("select id, count(*) as rows from items group by id", merge: Merge.Concat<dynamic>()))
                    .SelectMany(g => Enumerable.Repeat(new Item { Id = (long)g.id }, (int)(long)g.rows)).ToList();
                foreach (var (name, list) in new[] { ("buffered", rows), ("unbuffered", streamed), ("dynamic", untyped), ("dynamic groups", groups) })
                {
                    if (list.Count != truth.Count || list.Select(r => r.Id).Distinct().Count() != truth.Count)
                    {
                        wrong.Enqueue($"{name}: {list.Count} rows, {list.Select(r => r.Id).Distinct().Count()} distinct, epoch {app.Map.Epoch}");
                    }
                }

                Interlocked.Increment(ref reads);
            }
        });

        await admin.Resharding.MoveBucketsAsync(buckets, "s1", new MoveOptions { CleanupDelay = TimeSpan.FromMilliseconds(500), DeletePause = TimeSpan.Zero });
        await Task.Delay(200);
        await done.CancelAsync();
        await reader;

        Assert.That(wrong, Is.Empty);
        Assert.That(reads, Is.GreaterThan(3));
        await AssertPlacedAsync(shards, admin, truth);
    }

    [Test]
    public async Task A_cancelled_move_leaves_nothing_behind_and_the_source_keeps_its_buckets()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 2000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(16).ToArray();
        using var stop = new StopOnDispose();

        Assert.CatchAsync<OperationCanceledException>(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", new MoveOptions { Parallelism = 1, CopyScanBytes = 1 },
            new InlineProgress(p =>
            {
                if (p.State == MoveState.Copying && p.RowsCopied > 0)
                {
                    stop.Cancel();
                }
            }), stop.Token));
        var move = (await admin.Resharding.GetMovesAsync()).Single();
        Assert.That(move.State, Is.EqualTo(MoveState.Copying));

        await admin.Resharding.CancelMoveAsync(move.MoveId);

        Assert.That((await admin.Resharding.GetMovesAsync()).Single().State, Is.EqualTo(MoveState.Cancelled));
        Assert.That(admin.Map.Buckets!.BucketsOf(0), Is.SupersetOf(buckets));
        await AssertPlacedAsync(shards, admin, truth);
        // Cancelling again is harmless; resuming a cancelled move is refused.
        await admin.Resharding.CancelMoveAsync(move.MoveId);
        Assert.That(Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.ResumeMoveAsync(move.MoveId))!.Message, Does.Contain("Cancelled"));
    }

    [Test]
    public async Task A_stopped_move_resumes_and_copies_no_finished_chunk_again()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 2000);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(16).ToArray();
        using var stop = new StopOnDispose();
        Assert.CatchAsync<OperationCanceledException>(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", new MoveOptions { Parallelism = 1, CopyScanBytes = 1 },
            new InlineProgress(p =>
            {
                // After the first scan (8 buckets; the scans' chunks are recorded together).
                if (p.State == MoveState.Copying && p.RowsCopied > 0)
                {
                    stop.Cancel();
                }
            }), stop.Token));
        var stopped = (await admin.Resharding.GetMovesAsync()).Single();
        var chunksBefore = await shards.ScalarAsync<int>(0, "select count(*)::int from shardkit.move_chunk");
        Assert.That(chunksBefore, Is.GreaterThan(0).And.LessThan(16));
        // Rows written while the move was stopped are caught up after the resume.
        await using (var db = admin.CreateConnection())
        {
            foreach (var key in truth.Keys.Where(k => buckets.Contains(admin.Map.BucketOf(k))).Take(20).ToList())
            {
                await db.ExecuteAsync("update items set n = n + 1000 where id = @Id", new Item { Id = key });
                truth[key] += 1000;
            }
        }

        var result = await admin.Resharding.ResumeMoveAsync(stopped.MoveId, Quick);

        Assert.That(result.MoveId, Is.EqualTo(stopped.MoveId));
        Assert.That(await shards.ScalarAsync<int>(0, "select count(*)::int from shardkit.move_chunk"), Is.EqualTo(16));
        await AssertPlacedAsync(shards, admin, truth);
    }

    [Test]
    public async Task A_move_stopped_with_the_catalog_switched_but_the_target_not_yet_owning_takes_the_buckets_on_resume()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 500);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(8).ToArray();
        using var stop = new StopOnDispose();
        // Stopped once switched (before the source's copies are deleted).
        Assert.CatchAsync<OperationCanceledException>(() => admin.Resharding.MoveBucketsAsync(buckets, "s1",
            new MoveOptions { CleanupDelay = TimeSpan.FromMinutes(1) }, new InlineProgress(p =>
            {
                if (p.State == MoveState.Switched)
                {
                    stop.Cancel();
                }
            }), stop.Token));
        var stopped = (await admin.Resharding.GetMovesAsync()).Single();
        Assert.That(stopped.State, Is.EqualTo(MoveState.Switched));
        // The switch commits the target's taking over and the catalog at once: as if the target's commit never came.
        await using (var target = await shards.OpenAsync(1))
        {
            await target.ExecuteAsync("update shardkit.bucket_owner set owned = false, epoch = epoch - 1 where bucket = any(@buckets)", new { buckets });
        }

        await admin.Resharding.ResumeMoveAsync(stopped.MoveId, Quick);

        Assert.That(await shards.ScalarAsync<int>(1, "select count(*)::int from shardkit.bucket_owner where owned and bucket = any(@buckets)", new { buckets }),
            Is.EqualTo(buckets.Length));
        await using (var db = admin.CreateConnection())
        {
            var key = truth.Keys.First(k => buckets.Contains(admin.Map.BucketOf(k)));
            Assert.That(await db.ExecuteAsync("update items set n = n + 1 where id = @Id", new Item { Id = key }), Is.EqualTo(1));
            truth[key] += 1;
        }

        await AssertPlacedAsync(shards, admin, truth);
    }

    [Test]
    public async Task A_writer_transaction_that_closes_a_deadlock_with_the_move_costs_the_move_a_retry_not_its_run()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 300);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(2).ToArray();
        var (first, second) = (buckets.Min(), buckets.Max());
        // A writer's transaction holds the second bucket (as its fenced write would), then asks for the first once the
        // move, which locks in bucket order, holds the first and waits for the second.
        // (Taken once catching up: earlier, the replication slot's creation would wait for this transaction.)
        await using var writer = await shards.OpenAsync(0);
        var holding = false;
        var move = admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick, new InlineProgress(p =>
        {
            if (p.State == MoveState.CatchingUp && !holding)
            {
                holding = true;
                writer.Execute("begin; select shardkit.check_buckets(array[@second])", new { second });
            }
        }));
        await using (var watcher = await shards.OpenAsync(0))
        {
            var deadline = DateTime.UtcNow.AddSeconds(60);
            // (The slot's creation also waits for the writer's transaction; only the move's lock of the buckets counts.)
            while (await watcher.ExecuteScalarAsync<int>("select count(*)::int from pg_stat_activity " +
                       "where wait_event_type = 'Lock' and query like '%bucket_owner%for update%' and query not like '%nowait%'") == 0)
            {
                Assert.That(DateTime.UtcNow, Is.LessThan(deadline), "the move never waited for the writer's bucket");
                Assert.That(move.IsFaulted, Is.False, () => $"the move failed before waiting: {move.Exception}");
                await Task.Delay(20);
            }
        }

        try
        {
            await writer.ExecuteAsync("select shardkit.check_buckets(array[@first])", new { first });
        }
        catch (Npgsql.PostgresException e) when (e.SqlState == Npgsql.PostgresErrorCodes.DeadlockDetected)
        {
            // PostgreSQL ends the transaction whose wait began first (the move's); rarely the writer's.
        }

        await writer.ExecuteAsync("rollback");
        var result = await move;

        Assert.That(result.Buckets, Is.EquivalentTo(buckets));
        await AssertPlacedAsync(shards, admin, truth);
    }

    [Test]
    public async Task Adding_a_shard_gives_it_an_even_share_of_buckets_and_their_rows()
    {
        await using var shards = await ReshardingShards.CreateAsync(3);
        var two = shards.NewSource(take: 2);
        await two.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(two, 3000);
        var three = shards.NewSource();
        Assert.That(three.Map.Buckets!.BucketsOf(2), Is.Empty, "the stored map gives the new shard nothing yet");

        var moves = await three.Resharding.AddShardAsync("s2", Quick);

        Assert.That(moves.Select(m => m.Source), Is.EquivalentTo(new[] { "s0", "s1" }));
        var counts = Enumerable.Range(0, 3).Select(s => three.Map.Buckets!.BucketsOf(s).Count).ToArray();
        Assert.That(counts.Max() - counts.Min(), Is.LessThanOrEqualTo(1), string.Join(",", counts));
        await AssertPlacedAsync(shards, three, truth);
        Assert.That((await shards.AllRowsAsync()).Count(r => r.Shard == 2), Is.GreaterThan(500));
    }

    [Test]
    public async Task A_new_shard_without_the_schema_is_migrated_before_it_receives_buckets()
    {
        await using var shards = await ReshardingShards.CreateAsync(3);
        await using (var fresh = await shards.OpenAsync(2))
        {
            await Dapper.SqlMapper.ExecuteAsync(fresh, "drop table items");
        }

        var two = shards.NewSource(take: 2);
        await two.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(two, 1000);
        var three = shards.NewSource();
        Migration[] migrations = [new(1, "items", "create table if not exists items (id bigint primary key, payload text, n int not null default 0)")];

        // Without the migrations the preflight refuses the target; with them every shard reaches version 1 first.
        Assert.That(Assert.ThrowsAsync<ShardConfigurationException>(() => three.Resharding.AddShardAsync("s2", Quick))!.Message, Does.Contain("no column id"));
        var moves = await three.Resharding.AddShardAsync("s2", new MoveOptions { CleanupDelay = TimeSpan.Zero, Migrations = migrations });

        Assert.That(moves, Is.Not.Empty);
        Assert.That((await three.GetMigrationStatusAsync(migrations)).IsUpToDate, Is.True);
        await AssertPlacedAsync(shards, three, truth);
    }

    [Test]
    public async Task Bad_moves_are_refused_before_anything_is_recorded()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var mixed = new[] { admin.Map.Buckets!.BucketsOf(0)[0], admin.Map.Buckets.BucketsOf(1)[0] };

        Assert.ThrowsAsync<ArgumentException>(() => admin.Resharding.MoveBucketsAsync([shards.Buckets], "s1"));
        Assert.ThrowsAsync<ArgumentException>(() => admin.Resharding.MoveBucketsAsync([], "s1"));
        Assert.That(Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.MoveBucketsAsync([0], "s9"))!.Message, Does.Contain("no shard named 's9'"));
        Assert.That(Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.MoveBucketsAsync(mixed, "s1"))!.Message, Does.Contain("one source shard"));
        Assert.That(Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.MoveBucketsAsync([0], "s0"))!.Message, Does.Contain("already"));
        Assert.ThrowsAsync<ArgumentException>(() => admin.Resharding.MoveBucketsAsync([0], "s1", new MoveOptions { Parallelism = 0 }));
        Assert.That(Assert.ThrowsAsync<ArgumentException>(() => admin.Resharding.MoveBucketsAsync([0], "s1", new MoveOptions { CopyRowsPerSecond = 0 }))!.Message,
            Does.Contain("CopyRowsPerSecond is 0"));
        Assert.That(Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.ResumeMoveAsync("nope"))!.Message, Does.Contain("no move 'nope'"));
        Assert.That(await admin.Resharding.GetMovesAsync(), Is.Empty);
    }

    [Test]
    public async Task A_table_without_a_fence_on_the_target_stops_the_move_in_preflight()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        await using (var target = await shards.OpenAsync(1))
        {
            await target.ExecuteAsync("drop trigger shardkit_fence_insert on items");
        }

        // Refused before it is recorded: no move to cancel, nothing left behind.
        var error = Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.MoveBucketsAsync([0], "s1", Quick));
        Assert.That(error!.Message, Does.Contain("no ownership fence").And.Contain("Nothing was recorded"));
        Assert.That(error.MoveId, Is.Null);
        Assert.That(await admin.Resharding.GetMovesAsync(), Is.Empty);
        Assert.That(await shards.LeftoversAsync(), Is.EqualTo(0));
    }

    // The freeze's comparison runs in the same round trip as the source's giving up, before the target's answer is in. A
    // target whose rows differ (a trigger there changes one as it is copied) must then give the buckets back to the
    // source: the move fails with a typed error, nothing is switched, writes go on on the source, and the move cancels
    // clean. A mover stopped between the giving up and the target's answer leaves the source not owning them; a resume
    // compares every row again and gives them back the same way.
    [Test]
    public async Task Rows_that_differ_at_the_freeze_give_the_buckets_back_to_the_source_also_on_resume()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var (admin, truth, buckets, moving) = await DivergingMoveAsync(shards);

        var error = Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick));
        Assert.That(error!.Message, Does.Contain("differ").And.Contain("'s0' owns the buckets"));
        var id = error.MoveId!;
        Assert.That(Messages(), Has.Some.Contains("chunk(s) differ from the snapshot's account"), "found by the comparison sent with the giving up");
        Assert.That(Messages().Count(m => m.Contains("owns buckets", StringComparison.Ordinal) && m.Contains("again", StringComparison.Ordinal)),
            Is.EqualTo(1), "given up, then given back");
        await AssertSourceOwnsAsync();

        // As a mover stopped right after the source's giving up leaves it.
        await using (var source = await shards.OpenAsync(0))
        {
            await source.ExecuteAsync("update shardkit.bucket_owner set owned = false, moved_to = 's1', epoch = epoch + 1 where bucket = any(@buckets)",
                new { buckets });
        }

        var resumed = Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.ResumeMoveAsync(id, Quick));
        Assert.That(resumed!.Message, Does.Contain("differ").And.Contain("'s0' owns the buckets"));
        Assert.That(Messages().Count(m => m.Contains("owns buckets", StringComparison.Ordinal) && m.Contains("again", StringComparison.Ordinal)), Is.EqualTo(2));
        await AssertSourceOwnsAsync();

        await admin.Resharding.CancelMoveAsync(id);
        Assert.That((await admin.Resharding.GetMovesAsync()).Single(m => m.MoveId == id).State, Is.EqualTo(MoveState.Cancelled));
        await AssertPlacedAsync(shards, admin, truth);

        List<string> Messages() => [.. shards.Logs.Logs.Select(l => l.Message)];

        async Task AssertSourceOwnsAsync()
        {
            Assert.That(await shards.ScalarAsync<bool>(0, "select bool_and(owned) from shardkit.bucket_owner where bucket = any(@buckets)", new { buckets }),
                Is.True, "the source owns the buckets again");
            Assert.That(await shards.ScalarAsync<long>(1, "select count(*) from shardkit.bucket_owner where bucket = any(@buckets) and owned", new { buckets }),
                Is.EqualTo(0), "the target took none");
            await admin.Resharding.RefreshMapAsync();
            Assert.That(buckets.Select(b => admin.Map.Buckets!.ShardOfBucket(b)), Is.All.EqualTo(0), "the map did not switch");
            await using var db = admin.CreateConnection();
            var key = moving[^1];
            var n = (truth[key] ?? 0) + 1;
            Assert.That(await db.ExecuteAsync("update items set n = @N where id = @Id", new Item { Id = key, N = n }), Is.EqualTo(1));
            truth[key] = n;
            Assert.That(await shards.ScalarAsync<int>(0, "select n from items where id = @key", new { key }), Is.EqualTo(n), "written on the source");
        }
    }

    // A bulk load routed by a map older than a switch reaches the source, which keeps the moved rows until the cleanup.
    // A row of the load whose key is among them (deleted on the new owner since) failed as a duplicate (23505) before the
    // fence could refuse the COPY: the app saw an error it could not act on. It is the fence's refusal now, nothing is
    // kept, and the same load by the new map goes in.
    [Test]
    public async Task A_bulk_load_by_an_old_map_that_meets_the_sources_kept_rows_is_refused_as_moved()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 500);
        var old = shards.NewSource(stored: false); // a map from options: it never hears of the move
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(8).ToArray();
        var moving = truth.Keys.Where(k => buckets.Contains(admin.Map.BucketOf(k))).Order().ToArray();
        Assume.That(moving, Has.Length.GreaterThan(2));
        var switched = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var move = admin.Resharding.MoveBucketsAsync(buckets, "s1",
            new MoveOptions { CleanupDelay = TimeSpan.FromSeconds(5), AnnounceWait = TimeSpan.Zero, DeletePause = TimeSpan.Zero },
            new InlineProgress(p =>
            {
                if (p.State == MoveState.Switched)
                {
                    switched.TrySetResult();
                }
            }));
        await switched.Task.WaitAsync(TimeSpan.FromSeconds(60));
        await admin.Resharding.RefreshMapAsync();
        await using (var db = admin.CreateConnection())
        {
            Assert.That(await db.ExecuteAsync("delete from items where id = @Id", new Item { Id = moving[0] }), Is.EqualTo(1), "deleted on the new owner");
            truth[moving[0]] = null;
        }

        Assume.That(await shards.ScalarAsync<long>(0, "select count(*) from items where id = @id", new { id = moving[0] }), Is.EqualTo(1),
            "the source keeps the row until the cleanup");
        var fresh = new[] { moving[0], 5_000_000L + moving[0] };
        await using (var stale = old.CreateConnection())
        {
            var error = Assert.ThrowsAsync<BulkInsertException>(() => stale.BulkInsertAsync("items", fresh.Select(k => new Item { Id = k, Payload = "bulk", N = 7 })));
            Assert.That(ShardBucketMovedException.IsMoved(error), Is.True, error!.ToString());
            var refusal = ShardBucketMovedException.Find(error, "s0")!;
            Assert.That(refusal.Shard, Is.EqualTo("s0"));
            Assert.That(buckets, Does.Contain(refusal.Bucket));
            Assert.That(refusal.MovedTo, Is.EqualTo("s1"));
            Assert.That(error.Message, Does.Contain("No shard kept any row"));
        }

        await using (var db = admin.CreateConnection())
        {
            var loaded = await db.BulkInsertAsync("items", fresh.Select(k => new Item { Id = k, Payload = "bulk", N = 7 }));
            Assert.That(loaded.Total, Is.EqualTo(2));
        }

        foreach (var key in fresh)
        {
            truth[key] = 7;
        }

        await move;
        await AssertPlacedAsync(shards, admin, truth);
    }

    // The copy's progress carries an estimate of the rows it moves, from the source's statistics. A table never analyzed
    // (a fresh load) has none: the estimate is unknown (-1), not 0 rows (the adversary round saw 0 during a real copy).
    [Test]
    public async Task The_copys_rows_estimate_is_unknown_without_statistics_and_close_with_them()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        await SeedRowsAsync(admin, 2_000);
        var estimates = new List<long>();
        var progress = new InlineProgress(p =>
        {
            if (p.State == MoveState.Copying)
            {
                estimates.Add(p.RowsEstimate);
            }
        });

        var first = await admin.Resharding.MoveBucketsAsync(admin.Map.Buckets!.BucketsOf(0).Take(8).ToArray(), "s1", Quick, progress);
        Assert.That(first.RowsCopied, Is.GreaterThan(0));
        Assert.That(estimates, Is.Not.Empty.And.All.Not.EqualTo(0L), "an estimate of 0 rows while rows are copied");

        await using (var source = await shards.OpenAsync(0))
        {
            await source.ExecuteAsync("analyze items");
        }

        estimates.Clear();
        var second = await admin.Resharding.MoveBucketsAsync(admin.Map.Buckets!.BucketsOf(0).Take(8).ToArray(), "s1", Quick, progress);
        Assert.That(estimates, Is.Not.Empty.And.All.InRange(second.RowsCopied / 3, second.RowsCopied * 3 + 10), $"copied {second.RowsCopied}");
    }

    // The other side of the refusal above: a load by an old map whose rows are all in buckets the shard still owns, with
    // a real duplicate among them, reports the duplicate and the row at fault, although other buckets of the shard moved
    // away meanwhile. The check used to ask about every bucket the old map gave the shard, and called the duplicate a move.
    [Test]
    public async Task A_real_duplicate_in_a_bulk_load_by_an_old_map_is_reported_though_other_buckets_moved()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 500);
        var old = shards.NewSource(stored: false); // a map from options: it never hears of the move
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(8).ToArray();
        await admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick);

        // Both keys in buckets s0 still owns: one already there (a real duplicate), one new.
        var staying = truth.Keys.Where(k => admin.ShardFor(k) == "s0").Order().ToArray();
        var fresh = Enumerable.Range(1, 10_000).Select(i => 7_000_000L + i).First(k => admin.ShardFor(k) == "s0");
        Assume.That(buckets, Does.Not.Contain(admin.Map.BucketOf(staying[0])));
        await using (var stale = old.CreateConnection())
        {
            var error = Assert.ThrowsAsync<BulkInsertException>(() =>
                stale.BulkInsertAsync("items", new[] { fresh, staying[0] }.Select(k => new Item { Id = k, Payload = "bulk", N = 7 })));
            Assert.That(ShardBucketMovedException.IsMoved(error), Is.False, error!.ToString());
            Assert.That(error.RowIndex, Is.EqualTo(1), error.ToString());
            Assert.That(error.ToString(), Does.Contain("23505").Or.Contain("duplicate key"));
        }

        Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from items where id = @id", new { id = fresh }), Is.Zero, "nothing kept");
        await AssertPlacedAsync(shards, admin, truth);
    }

    // A mover stopped after the target's commit and before the catalog's switch leaves the move in Switching with the
    // target owning the buckets, and writers refused by the source may have written there since. A resume must finish
    // the switch as it is: comparing the rows again would find those writes, give the buckets back to the source and
    // leave two owners (the review of the shared give-up round trip found the resume doing that).
    [Test]
    public async Task A_resume_after_the_target_took_the_buckets_finishes_the_switch_and_keeps_the_writes_made_there()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        // The trigger only stops the move in Switching (its comparison fails), as a stopped mover would leave it.
        var (admin, truth, buckets, moving) = await DivergingMoveAsync(shards);

        var error = Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.MoveBucketsAsync(buckets, "s1", Quick));
        var id = error!.MoveId!;
        await using (var target = await shards.OpenAsync(1))
        {
            await target.ExecuteAsync("drop trigger diverge on items");
        }

        // As the freeze leaves it right after the target's commit: given up on the source, taken on the target.
        var epoch = await shards.ScalarAsync<long>(0,
            "with g as (update shardkit.bucket_owner set owned = false, moved_to = 's1', epoch = epoch + 1 where bucket = any(@buckets) returning epoch) select max(epoch) from g",
            new { buckets });
        await using (var target = await shards.OpenAsync(1))
        {
            await target.ExecuteAsync("update shardkit.bucket_owner set owned = true, moved_to = null, epoch = @epoch where bucket = any(@buckets)", new { epoch, buckets });
        }

        await using (var db = admin.CreateConnection())
        {
            // The map still names s0: refused there, the write follows the refusal to s1, which takes it.
            Assert.That(await db.ExecuteAsync("update items set n = n + 1000 where id = @Id", new Item { Id = moving[1] }), Is.EqualTo(1));
            truth[moving[1]] = truth[moving[1]] + 1000;
        }

        Assert.That(await shards.ScalarAsync<int>(1, "select n from items where id = @id", new { id = moving[1] }), Is.EqualTo(truth[moving[1]]));
        var result = await admin.Resharding.ResumeMoveAsync(id, Quick);
        Assert.That(result.MoveId, Is.EqualTo(id));
        Assert.That(shards.Logs.Logs.Count(l => l.Message.Contains("owns buckets", StringComparison.Ordinal) && l.Message.Contains("again", StringComparison.Ordinal)),
            Is.EqualTo(1), "only the first run's failed comparison gave them back");
        Assert.That(await shards.ScalarAsync<long>(0, "select count(*) from shardkit.bucket_owner where bucket = any(@buckets) and owned", new { buckets }),
            Is.EqualTo(0), "one owner: the target");
        await AssertPlacedAsync(shards, admin, truth);
        Assert.That(buckets.Select(b => admin.Map.Buckets!.ShardOfBucket(b)), Is.All.EqualTo(1));
    }

    // 500 rows seeded, 8 buckets of s0 to move, and a trigger on s1 that changes the first moving row as it is copied
    // there: a move of those buckets to s1 finds the rows differ in its freeze.
    private static async Task<(ShardedDataSource Admin, Dictionary<long, int?> Truth, int[] Buckets, long[] Moving)> DivergingMoveAsync(ReshardingShards shards)
    {
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await SeedRowsAsync(admin, 500);
        var buckets = admin.Map.Buckets!.BucketsOf(0).Take(8).ToArray();
        var moving = truth.Keys.Where(k => buckets.Contains(admin.Map.BucketOf(k))).Order().ToArray();
        Assume.That(moving, Has.Length.GreaterThan(2));
        await using var target = await shards.OpenAsync(1);
        await target.ExecuteAsync($"""
            create function diverge() returns trigger language plpgsql as $$ begin new.payload := 'diverged'; return new; end $$;
            create trigger diverge before insert on items for each row when (new.id = {moving[0]}) execute function diverge();
            """);
        return (admin, truth, buckets, moving);
    }
}

/// <summary>Handles each report on the reporting thread.</summary>
internal sealed class InlineProgress(Action<MoveProgress> onReport) : IProgress<MoveProgress>
{
    public void Report(MoveProgress value) => onReport(value);
}

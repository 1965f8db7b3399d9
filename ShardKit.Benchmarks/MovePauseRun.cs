using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Dapper;
using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Benchmarks;

/// <summary>
/// A live bucket move under write load, measured: <c>writers</c> concurrent writers upsert random keys through ShardKit
/// (one statement per write), first for a baseline period with no move, then while a move of some buckets runs. It
/// reports latency percentiles of the writes to the moving buckets and to the others, errors, the move's pause and copy
/// rate. <c>dotnet run -c Release --project ShardKit.Benchmarks -- move-pause [writers] [rows] [buckets to move] [baseline s] [verify 1/0] [writes/s] [parallelism] [rounds] [floor 1/0] [copy rows/s]</c>:
/// with no rate (or 0) each writer sends its next write as soon as the last one returned, which on a small machine keeps
/// every core busy; with a rate the writers together send that many writes a second (each on its own even schedule),
/// the load of a service whose servers have room left. With rounds above 1, each round is a no-move window followed by
/// a move of the same buckets, back and forth between s0 and s1; the summary pools the rounds, and each round and the
/// other buckets' writes by the step of the move they started in are printed too. With floor 1 no move runs: each
/// round's move is replaced by the least work any mover must do for the same rows, written by hand (<see cref="FloorAsync"/>),
/// so the other buckets' ratio under it says what the machine allows, whatever the mover.
/// </summary>
public static class MovePauseRun
{
    public sealed record Report(int Writers, long Rows, int MovedBuckets, int BucketCount, Percentiles Baseline, Percentiles Moving, Percentiles Others,
        int Errors, MoveResult Move, int WritesPerSecond = 0, int Rounds = 1)
    {
        public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"""
            {Writers} writers ({(WritesPerSecond > 0 ? $"paced, {WritesPerSecond:N0} writes/s together" : "each writing as fast as it can")}), {Rows:N0} rows, moving {MovedBuckets} of {BucketCount} buckets ({Move.RowsCopied:N0} rows) {(Rounds > 1 ? $"between {Move.Source} and {Move.Target}, {Rounds} moves each after a no-move run (all rounds together)" : $"from {Move.Source} to {Move.Target}")}
              {(Rounds > 1 ? "last " : "")}move: {Move.Duration.TotalSeconds:0.0} s, switch pause {Move.Pause.TotalMilliseconds:0.0} ms, errors {Errors}
              writes, no move:            {Baseline}
              writes to moving buckets:   {Moving}
              writes to other buckets:    {Others}  (p99 {Others.P99 / Baseline.P99:0.00}x the no-move run)
            """);
    }

    public sealed record Percentiles(int Count, double P50, double P99, double Max)
    {
        public static Percentiles Of(List<double> ms)
        {
            ms.Sort();
            double At(double q) => ms.Count == 0 ? 0 : ms[Math.Min(ms.Count - 1, (int)(q * ms.Count))];
            return new Percentiles(ms.Count, At(0.5), At(0.99), ms.Count == 0 ? 0 : ms[^1]);
        }

        public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Count,7:N0} writes  p50 {P50,6:0.00} ms  p99 {P99,7:0.00} ms  max {Max,7:0.0} ms");
    }

    public static async Task RunAsync(string[] args)
    {
        int Arg(int i, int fallback) => args.Length > i ? int.Parse(args[i], CultureInfo.InvariantCulture) : fallback;
        try
        {
            Console.WriteLine(await MeasureAsync(Arg(1, 32), Arg(2, 200_000), Arg(3, 32), TimeSpan.FromSeconds(Arg(4, 5)), verify: Arg(5, 1) == 1,
                writesPerSecond: Arg(6, 0), parallelism: Arg(7, new MoveOptions().Parallelism), rounds: Arg(8, 1), floor: Arg(9, 0) == 1, copyRowsPerSecond: Arg(10, 0)));
        }
        finally
        {
            await TestShards.ShutdownAsync();
        }
    }

    private const double SlowWriteMs = 80;
    private const double SlowBaselineMs = 300;

    // Writers run this long before the no-move run is measured. With one second, writes of 0.5-0.8 s came in the no-move
    // run's first half second in every run (the process and the servers still settling after the load and the writers'
    // start), which raised its p99 and flattered the other buckets' ratio to it.
    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(3);

    public static async Task<Report> MeasureAsync(int writers, int rows, int moveBuckets, TimeSpan baseline, int bucketCount = 1024, bool log = true,
        bool verify = true, int writesPerSecond = 0, int parallelism = 4, int rounds = 1, bool floor = false, int copyRowsPerSecond = 0)
    {
        var servers = (await TestShards.GetAsync()).ConnectionStrings.Take(2).ToArray();
        var database = "move_" + Guid.NewGuid().ToString("N")[..10];
        var direct = new List<string>();
        foreach (var server in servers)
        {
            await using (var admin = new NpgsqlConnection(server))
            {
                await admin.OpenAsync();
                await admin.ExecuteAsync($"create database {database}");
            }

            // As an app's strings usually are: without the server's error details (the fence's refusals carry their
            // figures in the message too).
            var cs = new NpgsqlConnectionStringBuilder(server) { Database = database, MaxPoolSize = writers + 20, IncludeErrorDetail = false }
                .ConnectionString;
            direct.Add(cs);
            await using var conn = new NpgsqlConnection(cs);
            await conn.OpenAsync();
            await conn.ExecuteAsync("create table move_items (id bigint primary key, payload text not null, n int not null default 0)");
        }

        try
        {
            var builder = new ShardedDataSourceBuilder().UseHashSharding(bucketCount).UseStoredMap("s0")
                .UseLoggerFactory(log ? new MoveLog() : Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);
            for (var i = 0; i < direct.Count; i++)
            {
                builder.AddShard($"s{i}", direct[i]);
            }

            await using var source = builder.Build();
            await source.Resharding.SeedAsync([new ShardedTable("move_items", "id")]);
            await using (var db = source.CreateConnection())
            {
                await db.BulkInsertAsync("move_items", Enumerable.Range(1, rows).Select(i => new MoveItem(i, "payload " + i, 0)));
            }

            var moving = source.Map.Buckets!.BucketsOf(0).Take(moveBuckets).ToHashSet();
            var keys = rows * 2L;
            var phase = 0; // 0 warm-up, 1 baseline, 2 move, 3 done; the round in the bits above (round << 2 | phase)
            var baselineMs = new ConcurrentBag<(int Round, double Ms)>();
            var movingMs = new ConcurrentBag<(int Round, double Ms)>();
            var otherMs = new ConcurrentBag<(int Round, double Ms)>();
            var slowMoving = new ConcurrentBag<(double StartedAt, double Ms)>();
            var slowBaseline = new ConcurrentBag<(double StartedAt, double Ms)>();
            var otherByTime = new ConcurrentBag<(double StartedAt, double Ms)>();
            var baselineByTime = new ConcurrentBag<(double StartedAt, double Ms)>();
            var otherByStep = new ConcurrentBag<(int Round, double StartedAt, double Ms)>();
            var baselineStart = 0L;
            var errors = 0;
            using var stop = new CancellationTokenSource();
            var tasks = Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
            {
                var random = new Random(w);
                await using var db = source.CreateConnection();
                // Paced: this writer's writes are due every `interval`, from a start spread over the first one; a write
                // that returns late is followed at once by the next, without catching up on the ones it missed.
                var interval = writesPerSecond > 0 ? TimeSpan.FromSeconds((double)writers / writesPerSecond) : TimeSpan.Zero;
                var due = Stopwatch.GetTimestamp() + (long)(interval.TotalSeconds * Stopwatch.Frequency * w / writers);
                while (!stop.IsCancellationRequested)
                {
                    if (writesPerSecond > 0)
                    {
                        var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), due);
                        if (wait > TimeSpan.Zero)
                        {
                            try
                            {
                                await Task.Delay(wait, stop.Token);
                            }
                            catch (OperationCanceledException)
                            {
                                break;
                            }
                        }

                        due = Math.Max(due + (long)(interval.TotalSeconds * Stopwatch.Frequency), Stopwatch.GetTimestamp());
                    }

                    var key = random.NextInt64(1, keys);
                    // A write counts in the phase it started in: the first writes of the warm-up (connections opened,
                    // code compiled) end after it, and counted by their end they put seconds into the no-move run.
                    var state = Volatile.Read(ref phase);
                    var (round, startedIn) = (state >> 2, state & 3);
                    var started = Stopwatch.GetTimestamp();
                    try
                    {
                        await db.ExecuteAsync("insert into move_items (id, payload) values (@Id, 'w') on conflict (id) do update set n = move_items.n + 1",
                            new MoveItem(key, "", 0));
                    }
                    catch (Exception)
                    {
                        Interlocked.Increment(ref errors);
                        continue;
                    }

                    var ms = Stopwatch.GetElapsedTime(started).TotalMilliseconds;

                    switch (startedIn)
                    {
                        case 1:
                            baselineMs.Add((round, ms));
                            var at = Stopwatch.GetElapsedTime(Volatile.Read(ref baselineStart), started).TotalMilliseconds;
                            baselineByTime.Add((at, ms));
                            if (ms >= SlowBaselineMs)
                            {
                                slowBaseline.Add((at, ms));
                            }

                            break;
                        case 2:
                            var isMoving = moving.Contains(source.Map.BucketOf(key));
                            (isMoving ? movingMs : otherMs).Add((round, ms));
                            if (!isMoving)
                            {
                                otherByTime.Add((Stopwatch.GetElapsedTime(MoveLog.Start, started).TotalMilliseconds, ms));
                                otherByStep.Add((round, Stopwatch.GetElapsedTime(MoveLog.Start, started).TotalMilliseconds, ms));
                            }

                            if (isMoving && ms >= SlowWriteMs)
                            {
                                slowMoving.Add((Stopwatch.GetElapsedTime(MoveLog.Start, started).TotalMilliseconds, ms));
                            }

                            break;
                    }
                }
            })).ToArray();

            await Task.Delay(WarmUp);
            var sessionsBefore = await SessionsAsync(direct);
            MoveResult move = null!;
            var moves = new List<MoveResult>();
            var gc = new List<(GcMark NoMove, GcMark Move)>();
            for (var round = 0; round < rounds; round++)
            {
                // Each move after a no-move run of its own, the buckets back and forth: the machine's drift over a series
                // falls on both sides alike, and the app's pools have grown to what the writers need after the first.
                Volatile.Write(ref baselineStart, Stopwatch.GetTimestamp());
                Volatile.Write(ref phase, round << 2 | 1);
                var noMoveStart = GcMark.Now();
                await Task.Delay(baseline);
                var moveStart = GcMark.Now();
                MoveLog.Start = Stopwatch.GetTimestamp();
                Volatile.Write(ref MoveLog.Round, round);
                Volatile.Write(ref phase, round << 2 | 2);
                // The writers are this process's, on the mover's own data source: they hear the announcement and the switch
                // by notification, so the waits for followers that only check now and then are not needed here.
                move = floor
                    ? await FloorAsync(direct, [.. moving], bucketCount)
                    : await source.Resharding.MoveBucketsAsync(moving, round % 2 == 0 ? "s1" : "s0",
                        new MoveOptions
                        {
                            CleanupDelay = TimeSpan.Zero, AnnounceWait = TimeSpan.FromMilliseconds(500), Verify = verify, Parallelism = parallelism,
                            CopyRowsPerSecond = copyRowsPerSecond > 0 ? copyRowsPerSecond : null,
                        });
                Volatile.Write(ref phase, round << 2 | 3);
                var moveEnd = GcMark.Now();
                gc.Add((moveStart - noMoveStart, moveEnd - moveStart));
                moves.Add(move);
            }

            var sessionsAfter = await SessionsAsync(direct);
            await stop.CancelAsync();
            await Task.WhenAll(tasks);
            if (log && !slowBaseline.IsEmpty)
            {
                // A no-move write this slow is the machine's (or the servers'), not a move's: when it started, on the no-move run's clock.
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  no-move writes of {SlowBaselineMs} ms or more (started at, took): ") +
                    string.Join(", ", slowBaseline.OrderBy(w => w.StartedAt).Select(w => string.Create(CultureInfo.InvariantCulture, $"{w.StartedAt:F0}+{w.Ms:F0}"))));
            }

            if (log && rounds > 1)
            {
                for (var r = 0; r < rounds; r++)
                {
                    var (b, o, m) = (P(baselineMs, r), P(otherMs, r), P(movingMs, r));
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  round {r + 1}: {moves[r].Source}->{moves[r].Target} {moves[r].Duration.TotalSeconds:0.0} s, pause {moves[r].Pause.TotalMilliseconds,5:0.0} ms; no move p99 {b.P99,6:0.00}, other buckets p99 {o.P99,6:0.00} ({o.P99 / b.P99:0.00}x), moving buckets p99 {m.P99,6:0.00} max {m.Max,6:0.0}; GC no move {gc[r].NoMove}, move {gc[r].Move}"));
                }
            }

            if (log && rounds > 1 && !floor)
            {
                PrintSteps(otherByStep);
            }

            if (log && rounds == 1 && !otherByTime.IsEmpty)
            {
                // Per second, on the no-move run's clock and the move log's: how much one second's p99 varies without a
                // move, and which step of the move slows the other buckets' writes.
                PrintSeconds("no-move writes per second (from, writes, p50, p99):", baselineByTime);
                PrintSeconds("other buckets per second of the move (from, writes, p50, p99):", otherByTime);
            }

            if (log)
            {
                // Sessions the servers started during the move (the app's pools were full before it): the mover's own, each
                // a new backend (about 30 ms of server CPU on a small VM) that competes with the other buckets' writers.
                Console.WriteLine("  sessions started during the move, per shard: " +
                    string.Join(", ", sessionsAfter.Zip(sessionsBefore, (a, b) => (a - b - 1).ToString(CultureInfo.InvariantCulture))));
            }

            if (log && !slowMoving.IsEmpty)
            {
                // When the slow writes of the moving buckets started, on the move log's clock: which step they waited for.
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  writes to moving buckets of {SlowWriteMs} ms or more (started at, took): ") +
                    string.Join(", ", slowMoving.OrderBy(w => w.StartedAt).Select(w => string.Create(CultureInfo.InvariantCulture, $"{w.StartedAt:F0}+{w.Ms:F0}"))));
            }
            return new Report(writers, rows, moveBuckets, bucketCount, Percentiles.Of([.. baselineMs.Select(w => w.Ms)]), Percentiles.Of([.. movingMs.Select(w => w.Ms)]),
                Percentiles.Of([.. otherMs.Select(w => w.Ms)]), errors, move, writesPerSecond, rounds);
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            foreach (var server in servers)
            {
                await using var admin = new NpgsqlConnection(server);
                await admin.OpenAsync();
                await admin.ExecuteAsync("select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = @d and not active", new { d = database });
                await admin.ExecuteAsync($"drop database if exists {database} with (force)");
            }
        }
    }

    /// <summary>
    /// The least work any online mover must do to move these buckets' rows, by hand with Npgsql and no ShardKit: one scan
    /// of the source table that picks the buckets' rows (there is no index on a bucket) streamed as binary COPY into the
    /// target's table in one transaction, then the rows deleted from one side (a mover deletes the source's copies;
    /// here the target's, so the map and the writers stay as they are and the next round finds the same rows). No slot,
    /// catch-up, verification, freeze or catalog: a real move does all that on top.
    /// </summary>
    private static async Task<MoveResult> FloorAsync(IReadOnlyList<string> direct, int[] buckets, int bucketCount)
    {
        var started = Stopwatch.GetTimestamp();
        var bucket = BucketSql.BucketOf(BucketSql.HashOf("bigint", "id")!, bucketCount);
        await using var source = new NpgsqlConnection(direct[0]);
        await using var target = new NpgsqlConnection(direct[1]);
        await source.OpenAsync();
        await target.OpenAsync();
        await target.ExecuteAsync("set shardkit.fence = off");
        await using (var tx = await target.BeginTransactionAsync())
        {
            var list = string.Join(",", buckets);
            await using (var reader = await source.BeginRawBinaryCopyAsync(
                $"copy (select id, payload, n from move_items where {bucket} = any('{{{list}}}'::int[])) to stdout (format binary)"))
            await using (var writer = await target.BeginRawBinaryCopyAsync("copy move_items (id, payload, n) from stdin (format binary)"))
            {
                await reader.CopyToAsync(writer);
            }

            await tx.CommitAsync();
        }

        var copied = await target.ExecuteScalarAsync<long>($"with gone as (delete from move_items where {bucket} = any(@buckets) returning 1) select count(*) from gone",
            new { buckets });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    floor: {copied:N0} rows copied and deleted in {Stopwatch.GetElapsedTime(started).TotalMilliseconds:F0} ms"));
        return new MoveResult("floor", buckets, "s0", "s1", copied, TimeSpan.Zero, Stopwatch.GetElapsedTime(started), 0);
    }

    // The other buckets' writes of every round by the step of the move they started in (the steps' log lines end them).
    private static void PrintSteps(IEnumerable<(int Round, double StartedAt, double Ms)> writes)
    {
        string[] steps = ["announced", "replication", "Copying", "CatchingUp", "Switching", "verified before the freeze", "switched", "Done"];
        // The announcement's wait is the benchmark's 500 ms: the window after it to the slot's line is the slot's creation.
        var bounds = MoveLog.Steps.GroupBy(s => s.Round).ToDictionary(g => g.Key, g => steps.Select(step =>
            g.FirstOrDefault(s => s.Message.Contains(": " + step, StringComparison.Ordinal)).At).ToArray().Insert(1, a => a[0] + 500));
        string[] names = ["preflight", "announce wait", "publication, slot", "recorded", "copy", "catch-up", "verify", "freeze, switch", "cleanup"];
        var byStep = writes.Where(w => bounds.ContainsKey(w.Round)).GroupBy(w =>
        {
            var b = bounds[w.Round];
            var i = 0;
            while (i < b.Length && b[i] > 0 && w.StartedAt >= b[i])
            {
                i++;
            }

            return i;
        }).OrderBy(g => g.Key);
        Console.WriteLine("  other buckets' writes by the step of the move they started in, all rounds (step, ms per round, writes, p50, p99):");
        foreach (var step in byStep)
        {
            var p = Percentiles.Of([.. step.Select(w => w.Ms)]);
            var length = bounds.Values.Average(b => step.Key < b.Length ? b[step.Key] - (step.Key == 0 ? 0 : b[step.Key - 1]) : 0);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"    {(step.Key < names.Length ? names[step.Key] : "after"),-16} {length,6:F0} {p.Count,6} {p.P50,7:0.00} {p.P99,7:0.00}"));
        }
    }

    private static double[] Insert(this double[] bounds, int at, Func<double[], double> value) =>
        [.. bounds[..at], value(bounds), .. bounds[at..]];

    // This process's garbage collections over a window: the writers and (in this run) the mover share the process, and
    // a collection stops every writer's thread at once.
    private readonly record struct GcMark(long Ticks, TimeSpan Paused, int Gen0, int Gen1, int Gen2, long Allocated)
    {
        public static GcMark Now() => new(Stopwatch.GetTimestamp(), GC.GetTotalPauseDuration(), GC.CollectionCount(0), GC.CollectionCount(1),
            GC.CollectionCount(2), GC.GetTotalAllocatedBytes());

        public static GcMark operator -(GcMark a, GcMark b) =>
            new(a.Ticks - b.Ticks, a.Paused - b.Paused, a.Gen0 - b.Gen0, a.Gen1 - b.Gen1, a.Gen2 - b.Gen2, a.Allocated - b.Allocated);

        public override string ToString()
        {
            var seconds = (double)Ticks / Stopwatch.Frequency;
            return string.Create(CultureInfo.InvariantCulture,
                $"{Paused.TotalMilliseconds / seconds:0.0} ms/s paused ({Gen0}/{Gen1}/{Gen2}), {Allocated / seconds / 1e6:0} MB/s");
        }
    }

    private static Percentiles P(IEnumerable<(int Round, double Ms)> writes, int round) => Percentiles.Of([.. writes.Where(w => w.Round == round).Select(w => w.Ms)]);

    // pg_stat_database.sessions of the move's database on each shard (the asking session counts itself).
    private static async Task<long[]> SessionsAsync(IReadOnlyList<string> shards)
    {
        var counts = new long[shards.Count];
        for (var i = 0; i < shards.Count; i++)
        {
            await using var conn = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(shards[i]) { Pooling = false }.ConnectionString);
            await conn.OpenAsync();
            counts[i] = await conn.ExecuteScalarAsync<long>("select sessions from pg_stat_database where datname = current_database()");
        }

        return counts;
    }

    // Prints ShardKit's move steps (with the switch's timings) as they happen.
    private sealed class MoveLog : Microsoft.Extensions.Logging.ILoggerFactory, Microsoft.Extensions.Logging.ILogger
    {
        // When the move started; the log's times count from it.
        public static long Start;

        // The steps logged, as (round, ms since Start, message), for the other buckets' latency per step.
        public static int Round;
        public static readonly ConcurrentQueue<(int Round, double At, string Message)> Steps = new();

        public Microsoft.Extensions.Logging.ILogger CreateLogger(string categoryName) => categoryName == "ShardKit" ? this : Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

        public void AddProvider(Microsoft.Extensions.Logging.ILoggerProvider provider)
        {
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception,
            Func<TState, Exception?, string> formatter)
        {
            if (eventId.Id == 1704)
            {
                var at = Stopwatch.GetElapsedTime(Start).TotalMilliseconds;
                var message = formatter(state, exception);
                Steps.Enqueue((Volatile.Read(ref Round), at, message));
                Console.WriteLine($"    [{at,6:F0} ms] " + message);
            }
        }

        public void Dispose()
        {
        }
    }

    private sealed record MoveItem([property: ShardKey] long Id, string Payload, int N);

    private static void PrintSeconds(string title, IEnumerable<(double StartedAt, double Ms)> writes)
    {
        Console.WriteLine("  " + title);
        foreach (var second in writes.GroupBy(w => (int)(w.StartedAt / 1000)).OrderBy(g => g.Key))
        {
            var p = Percentiles.Of([.. second.Select(w => w.Ms)]);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    {second.Key * 1000,6} ms {p.Count,6} {p.P50,7:0.00} {p.P99,7:0.00}"));
        }
    }
}

using System.Collections.Concurrent;
using System.Diagnostics;
using Npgsql;

namespace ShardKit.Tests.Resharding;

public sealed class BucketReplicationTests
{
    private const int BucketCount = 16;
    private static readonly int[] Buckets = [1, 5, 9, 14];

    private static readonly Func<string, int, bool> NoneDone = static (_, _) => false;

    [Test]
    public async Task A_paced_copy_keeps_to_its_rows_a_second_over_all_its_scans_and_copies_every_row()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, name text not null)");
        await f.OnSourceAsync($"insert into {f.Table} select g, 'n' || g from generate_series(1, 8000) g");
        var table = await f.DescribeAsync("id");
        const long rate = 2000;

        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        move.CopyRowsPerSecond = rate;
        var clock = Stopwatch.StartNew();
        // Two scans at once share the rate (parallelism 2, one bucket group each).
        var copied = await move.CopyAsync(f.Target, Buckets, BucketCount, parallelism: 2, NoneDone, static (_, _, _) => Task.CompletedTask, null, null,
            CancellationToken.None);
        var elapsed = clock.Elapsed;

        await f.AssertMovedAsync(table, Buckets, BucketCount);
        Assert.That(copied, Is.GreaterThan(1000), "enough rows for the pace to show");
        // Every row waits for its slot (a scan's last rows too), less the pace's credit: unpaced, these rows copy in tens of
        // ms. The upper bound is loose (a busy machine is slow), only to catch a pace that waits far too long.
        var least = TimeSpan.FromSeconds(copied / (double)rate) - CopyPace.MostCredit - TimeSpan.FromMilliseconds(50);
        var allowed = TimeSpan.FromSeconds(4 * copied / (double)rate) + TimeSpan.FromSeconds(5);
        Assert.That(elapsed, Is.GreaterThanOrEqualTo(least).And.LessThan(allowed), $"{copied} rows at {rate}/s took {elapsed.TotalMilliseconds:F0} ms");
    }

    [Test]
    public async Task A_paced_copy_stops_promptly_when_cancelled_and_commits_nothing_of_its_scan()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, name text not null)");
        await f.OnSourceAsync($"insert into {f.Table} select g, 'n' || g from generate_series(1, 8000) g");
        var table = await f.DescribeAsync("id");

        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        move.CopyRowsPerSecond = 100; // about 20 s for these rows
        using var stop = new CancellationTokenSource(TimeSpan.FromMilliseconds(500));
        var clock = Stopwatch.StartNew();
        Assert.CatchAsync<OperationCanceledException>(() => move.CopyAsync(f.Target, Buckets, BucketCount, parallelism: 2, NoneDone,
            static (_, _, _) => Task.CompletedTask, null, null, stop.Token));

        // A look every 5 rows at 100 rows/s: a wait is 50 ms, and the cancel ends it.
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "the paced wait heeds the token");
        Assert.That((await MoveFixture.QueryAsync<long>(f.Target, $"select count(*) from {table.QualifiedName}")).Single(), Is.Zero,
            "the scans in flight rolled back");
    }

    [Test]
    public async Task Copy_moves_exactly_the_rows_of_the_chosen_buckets()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, name text not null, amount numeric, at timestamptz)");
        await f.OnSourceAsync($"insert into {f.Table} select g, 'n' || g, g / 7.0, timestamptz '2026-01-01' + g * interval '1 minute' from generate_series(-5000, 15000) g");
        var table = await f.DescribeAsync("id");
        var chunks = new ConcurrentDictionary<int, long>();
        var progress = new LastValue();

        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        var copied = await move.CopyAsync(f.Target, Buckets, BucketCount, parallelism: 3, NoneDone,
            (name, done, _) =>
            {
                foreach (var (bucket, rows) in done)
                {
                    Assert.That(chunks.TryAdd(bucket, rows), Is.True, $"{name} bucket {bucket} once");
                }

                return Task.CompletedTask;
            },
            progress, null, CancellationToken.None);

        await f.AssertMovedAsync(table, Buckets, BucketCount);
        Assert.That(progress.Value, Is.EqualTo(copied), "progress ends at the rows copied");
        var perBucket = (await MoveFixture.QueryAsync<(int Bucket, long Rows)>(f.Source,
            $"select ({table.BucketSql(BucketCount)})::int, count(*) from {table.QualifiedName} group by 1")).ToDictionary(r => r.Bucket, r => r.Rows);
        Assert.That(chunks, Is.EquivalentTo(Buckets.ToDictionary(b => b, b => perBucket[b])), "each chunk reports its bucket's rows");
        Assert.That(copied, Is.EqualTo(Buckets.Sum(b => perBucket[b])));
        Assert.That(perBucket.Values.Sum() - copied, Is.GreaterThan(10_000), "most rows belong to other buckets and stay");
    }

    [TestCase("bigint", "(g * 7919::int8 - 50000)")]
    [TestCase("text", "('key-' || g || 'é''\"')")]
    [TestCase("uuid", "md5(g::text)::uuid")]
    public async Task Server_and_client_agree_on_every_row_bucket(string type, string key)
    {
        await using var f = await MoveFixture.CreateAsync($"create table {{0}} (k {type} primary key)");
        await f.OnSourceAsync($"insert into {f.Table} select {key} from generate_series(1, 3000) g");
        var table = await f.DescribeAsync("k");

        var rows = await MoveFixture.QueryAsync<(string Key, int Bucket)>(f.Source,
            $"select k::text, ({table.BucketSql(BucketCount)})::int from {table.QualifiedName}");

        var disagree = rows.Where(r => table.BucketOfText(r.Key, BucketCount) != r.Bucket).ToList();
        Assert.That(disagree, Is.Empty);
        Assert.That(rows.Select(r => r.Bucket).Distinct().Count(), Is.EqualTo(BucketCount), "keys spread over every bucket");
    }

    [TestCase("bigint", "(g * 7919::int8 - 50000)")]
    [TestCase("text", "('key-' || g || ' ''q'' \"d\" \\ ünï 🚀')")]
    [TestCase("uuid", "md5(g::text)::uuid")]
    public async Task Writes_during_the_copy_are_on_the_target_after_catch_up(string type, string key)
    {
        await using var f = await MoveFixture.CreateAsync($"create table {{0}} (k {type} primary key, n int not null, note text, big text)");
        await f.OnSourceAsync(Seed(f.Table, key, 1, 4000));
        var table = await f.DescribeAsync("k");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);

        // After the snapshot: only the slot knows these.
        await f.OnSourceAsync(Seed(f.Table, key, 4001, 5000));
        await f.OnSourceAsync($"update {f.Table} set n = n + 100000, note = $$it's \"odd\" \\ ünïcødé 🚀 ' -- $$ where n % 5 = 0");
        await f.OnSourceAsync($"delete from {f.Table} where n % 7 = 0");
        await f.OnSourceAsync($"update {f.Table} set note = null, big = case when n % 150 = 0 then null else big end where n % 11 = 0 or n % 150 = 0");
        await f.OnSourceAsync($"update {f.Table} set k = {key.Replace("g", "(n + 700000)", StringComparison.Ordinal)} where n % 13 = 0");
        await f.OnSourceAsync($"begin; insert into {f.Table} select {key.Replace("g", "(g + 900000)", StringComparison.Ordinal)}, g, 'tx', null from generate_series(1, 50) g; " +
                              $"delete from {f.Table} where n between 1 and 25 and note = 'tx'; update {f.Table} set n = -n where n % 17 = 0; commit");
        using var stop = new StopOnDispose();
        var writer = WriteUntilStoppedAsync(f, stop.Token);
        await move.CopyAsync(f.Target, Buckets, BucketCount, parallelism: 2, NoneDone, static (_, _, _) => Task.CompletedTask, null, null, CancellationToken.None);
        await stop.CancelAsync();
        var written = await writer;

        var result = await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);

        Assert.That(written, Is.GreaterThan(0), "the writer ran during the copy");
        Assert.That(result.Changes, Is.GreaterThan(0));
        await f.AssertMovedAsync(table, Buckets, BucketCount);
        var toasted = await MoveFixture.QueryAsync<long>(f.Target, $"select count(*) from {f.Table} where length(big) > 5000");
        Assert.That(toasted[0], Is.GreaterThan(0), "rows whose TOASTed column was left unchanged by an update keep it");
    }

    [Test]
    public async Task Rows_whose_shard_key_outside_the_primary_key_changes_leave_or_join_the_moving_buckets()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, customer_id bigint not null, note text)");
        await f.OnSourceAsync($"insert into {f.Table} select g, g % 500, 'n' || g from generate_series(1, 5000) g");
        var table = await f.DescribeAsync("customer_id");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        await move.CopyAsync(f.Target, Buckets, BucketCount, 2, NoneDone, static (_, _, _) => Task.CompletedTask, null, null, CancellationToken.None);
        var moving = Enumerable.Range(0, 500).Where(c => Buckets.Contains(table.BucketOfText(c.ToString(System.Globalization.CultureInfo.InvariantCulture), BucketCount))).ToArray();
        var staying = Enumerable.Range(0, 500).Except(moving).ToArray();

        // Same primary key, new shard key: out of the moving buckets, into them, and within them.
        await f.OnSourceAsync($"update {f.Table} set customer_id = {staying[0]} where customer_id = {moving[0]}");
        await f.OnSourceAsync($"update {f.Table} set customer_id = {moving[1]} where customer_id = {staying[1]}");
        await f.OnSourceAsync($"update {f.Table} set customer_id = {moving[3]}, note = null where customer_id = {moving[2]}");
        await f.OnSourceAsync($"delete from {f.Table} where customer_id = {moving[4]} and id % 2 = 0");
        var result = await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);

        Assert.That(result.Changes, Is.GreaterThan(0));
        await f.AssertMovedAsync(table, Buckets, BucketCount);
        var left = await MoveFixture.QueryAsync<long>(f.Target, $"select count(*) from {f.Table} where customer_id = {staying[0]}");
        Assert.That(left[0], Is.Zero, "rows that left the moving buckets are gone from the target");
    }

    [TestCase("create table {0} (k bigint primary key, n int, big text)", "k")]
    [TestCase("create table {0} (id bigint primary key, k bigint not null, n int, big text)", "id")]
    public async Task A_row_that_joins_the_moving_buckets_keeps_its_unchanged_TOASTed_value(string ddl, string identity)
    {
        await using var f = await MoveFixture.CreateAsync(ddl);
        var table = await f.DescribeAsync("k");
        var keys = Enumerable.Range(1, 200).Select(i => (long)i).ToList();
        var inside = keys.Where(k => Buckets.Contains(table.BucketOfText(k.ToString(System.Globalization.CultureInfo.InvariantCulture), BucketCount))).ToList();
        var outside = keys.Except(inside).First();
        var withId = identity == "id" ? "id, " : "";
        await f.OnSourceAsync($"insert into {f.Table} ({withId}k, n, big) select {(identity == "id" ? "g, " : "")}g, g, null from generate_series(1, 200) g where g <> {inside[0]}");
        await f.OnSourceAsync($"update {f.Table} set big = (select string_agg(md5(random()::text || i), '') from generate_series(1, 400) i) where k = {outside}");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        await move.CopyAsync(f.Target, Buckets, BucketCount, 1, NoneDone, static (_, _, _) => Task.CompletedTask, null, null, CancellationToken.None);

        // Only k changes: pgoutput sends the TOASTed column as unchanged, and the target has no copy of it yet.
        await f.OnSourceAsync($"update {f.Table} set k = {inside[0]} where k = {outside}");
        await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);

        await f.AssertMovedAsync(table, Buckets, BucketCount);
        var big = await MoveFixture.QueryAsync<int?>(f.Target, $"select length(big) from {f.Table} where k = {inside[0]}");
        Assert.That(big, Is.EqualTo(new int?[] { 12800 }));
    }

    [Test]
    public async Task A_truncate_on_the_source_empties_the_moving_buckets_on_the_target()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key)");
        await f.OnSourceAsync($"insert into {f.Table} select g from generate_series(1, 2000) g");
        var table = await f.DescribeAsync("id");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        await move.CopyAsync(f.Target, Buckets, BucketCount, 1, NoneDone, static (_, _, _) => Task.CompletedTask, null, null, CancellationToken.None);
        var own = Enumerable.Range(1, 100).Select(i => -(long)i)
            .First(k => !Buckets.Contains(table.BucketOfText(k.ToString(System.Globalization.CultureInfo.InvariantCulture), BucketCount)));
        await f.OnTargetAsync($"insert into {f.Table} values ({own})");

        await f.OnSourceAsync($"truncate {f.Table}");
        await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);

        var ids = await MoveFixture.QueryAsync<long>(f.Target, $"select id from {f.Table}");
        Assert.That(ids, Is.EqualTo(new[] { own }), "only the target's own row of another bucket stays");
    }

    [Test]
    public async Task Catch_up_refuses_a_position_the_source_has_not_written()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key)");
        var table = await f.DescribeAsync("id");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        var ahead = new NpgsqlTypes.NpgsqlLogSequenceNumber(ulong.MaxValue - 1);

        var e = Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => move.CatchUpAsync(f.Target, Buckets, BucketCount, ahead, CancellationToken.None));

        Assert.That(e!.Message, Does.Contain("ahead of the source's WAL"));
    }

    [Test]
    public async Task Catch_up_resumed_after_cancellation_and_run_again_gives_the_same_rows()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, n int not null, note text)");
        await f.OnSourceAsync($"insert into {f.Table} select g, g, 'x' from generate_series(1, 20000) g");
        var table = await f.DescribeAsync("id");
        var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        await move.CopyAsync(f.Target, Buckets, BucketCount, 2, NoneDone, static (_, _, _) => Task.CompletedTask, null, null, CancellationToken.None);
        await move.DisposeAsync();
        for (var i = 0; i < 400; i++)
        {
            await f.OnSourceAsync($"update {f.Table} set n = n + 1, note = 'round {i}' where id % 400 = {i}");
        }

        await f.OnSourceAsync($"delete from {f.Table} where id % 9 = 0");
        var until = await f.SourceLsnAsync();

        await using (var first = await BucketReplication.ResumeAsync(f.Source, f.MoveId, [table], CancellationToken.None))
        {
            using var soon = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
            Assert.CatchAsync<OperationCanceledException>(() => first.CatchUpAsync(f.Target, Buckets, BucketCount, until, soon.Token));
        }

        await using var resumed = await BucketReplication.ResumeAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        var second = await resumed.CatchUpAsync(f.Target, Buckets, BucketCount, until, CancellationToken.None);
        await f.AssertMovedAsync(table, Buckets, BucketCount);
        var third = await resumed.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);

        Assert.That(second.Changes, Is.GreaterThan(0));
        Assert.That(third.Changes, Is.Zero, "the slot confirmed what was applied, so nothing is replayed");
        Assert.That(third.LastLsn, Is.GreaterThan(second.LastLsn));
        await f.AssertMovedAsync(table, Buckets, BucketCount);
    }

    [Test]
    public async Task A_copy_resumed_after_cancellation_copies_only_the_unfinished_chunks()
    {
        // Two scans of 8 buckets each with one at a time: cancelled after the first scan committed.
        var buckets = Enumerable.Range(0, BucketCount).ToArray();
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, name text)");
        await f.OnSourceAsync($"insert into {f.Table} select g, md5(g::text) from generate_series(1, 20000) g");
        var table = await f.DescribeAsync("id");
        var done = new ConcurrentDictionary<int, long>();
        using var cancel = new CancellationTokenSource();
        var firstCalls = 0;

        await using (var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None))
        {
            Assert.CatchAsync<OperationCanceledException>(() => move.CopyAsync(f.Target, buckets, BucketCount, 1, NoneDone, (_, chunks, _) =>
            {
                foreach (var (bucket, rows) in chunks)
                {
                    done[bucket] = rows;
                    firstCalls++;
                }

                // After the first scan (8 buckets): the second is stopped.
                cancel.Cancel();
                return Task.CompletedTask;
            }, null, null, cancel.Token));
        }

        var secondCalls = 0;
        await using var resumed = await BucketReplication.ResumeAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        await resumed.CopyAsync(f.Target, buckets, BucketCount, 2, (_, bucket) => done.ContainsKey(bucket), (_, chunks, _) =>
        {
            foreach (var (bucket, rows) in chunks)
            {
                Interlocked.Increment(ref secondCalls);
                Assert.That(done.TryAdd(bucket, rows), Is.True, $"bucket {bucket} copied once");
            }

            return Task.CompletedTask;
        }, null, null, CancellationToken.None);

        Assert.That(firstCalls, Is.EqualTo(8));
        Assert.That(secondCalls, Is.EqualTo(buckets.Length - 8), "only the unfinished chunks are copied again");
        await resumed.CatchUpAsync(f.Target, buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);
        await f.AssertMovedAsync(table, buckets, BucketCount);
    }

    [Test]
    public async Task Drop_leaves_no_slot_or_publication_after_a_copy_cancelled_midway()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, name text)");
        await f.OnSourceAsync($"insert into {f.Table} select g, md5(g::text) from generate_series(1, 20000) g");
        var table = await f.DescribeAsync("id");
        using var cancel = new CancellationTokenSource();
        var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        Assert.That(await f.LeftoversAsync(), Is.EqualTo((1L, 1L)));
        Assert.CatchAsync<OperationCanceledException>(() => move.CopyAsync(f.Target, Enumerable.Range(0, BucketCount).ToArray(), BucketCount, 1, NoneDone,
            (_, _, _) => cancel.CancelAsync(), null, null, cancel.Token));

        await BucketReplication.DropAsync(f.Source, f.MoveId, CancellationToken.None);
        await BucketReplication.DropAsync(f.Source, f.MoveId, CancellationToken.None);

        Assert.That(await f.LeftoversAsync(), Is.EqualTo((0L, 0L)));
        await move.DisposeAsync();
    }

    [Test]
    public async Task A_copy_cancelled_mid_scan_leaves_no_row_on_the_target_and_no_query_running()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, name text)");
        await f.OnSourceAsync($"insert into {f.Table} select g, repeat(md5(g::text), 4) from generate_series(1, 400000) g");
        var table = await f.DescribeAsync("id");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(150));
        var calls = 0;

        Assert.CatchAsync<OperationCanceledException>(() => move.CopyAsync(f.Target, Buckets, BucketCount, 1, NoneDone,
            (_, _, _) => { calls++; return Task.CompletedTask; }, null, null, cancel.Token));

        Assert.That(calls, Is.Zero, "the only scan was cut short");
        var onTarget = await MoveFixture.QueryAsync<long>(f.Target, $"select count(*) from {f.Table}");
        Assert.That(onTarget[0], Is.Zero, "the cut scan's transaction rolled back");
        long running = -1;
        for (var i = 0; i < 50 && running != 0; i++)
        {
            running = (await MoveFixture.QueryAsync<long>(f.Source,
                $"select count(*) from pg_stat_activity where query like 'copy (select s.*%{f.Table}%' and state = 'active'"))[0];
            await Task.Delay(running == 0 ? 0 : 100);
        }

        Assert.That(running, Is.Zero, "the source's COPY was cancelled");
    }

    [Test]
    public async Task Drop_ends_a_stream_that_still_holds_the_slot()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key)");
        var table = await f.DescribeAsync("id");
        await using (await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None))
        {
        }

        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var holder = Task.Run(async () =>
        {
            await using var replication = new Npgsql.Replication.LogicalReplicationConnection(f.Source);
            await replication.Open(stop.Token);
            var options = new Npgsql.Replication.PgOutput.PgOutputReplicationOptions(f.SlotName, Npgsql.Replication.PgOutput.PgOutputProtocolVersion.V1);
            await foreach (var _ in Npgsql.Replication.PgOutputConnectionExtensions.StartReplication(replication,
                               new Npgsql.Replication.PgOutput.PgOutputReplicationSlot(f.SlotName), options, stop.Token))
            {
            }
        });
        await WaitForAsync(async () => (await MoveFixture.QueryAsync<long>(f.Source,
            "select count(*) from pg_replication_slots where slot_name = @n and active_pid is not null", new { n = f.SlotName }))[0] == 1);

        await BucketReplication.DropAsync(f.Source, f.MoveId, CancellationToken.None);

        Assert.That(await f.LeftoversAsync(), Is.EqualTo((0L, 0L)));
        Assert.CatchAsync<Exception>(() => holder, "the stream was ended by the server");
    }

    [Test]
    public async Task Starting_a_move_id_twice_names_the_move_and_keeps_the_first()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key)");
        var table = await f.DescribeAsync("id");
        await using var first = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);

        var e = Assert.ThrowsAsync<BucketMoveException>(() => BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None));

        Assert.That(e!.Message, Does.Contain(f.MoveId).And.Contain("resume it or drop it"));
        Assert.That(await f.LeftoversAsync(), Is.EqualTo((1L, 1L)));
    }

    [Test]
    public async Task Resuming_a_move_that_was_never_started_says_to_start_again()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key)");
        var table = await f.DescribeAsync("id");

        var e = Assert.ThrowsAsync<BucketMoveException>(() => BucketReplication.ResumeAsync(f.Source, f.MoveId, [table], CancellationToken.None));

        Assert.That(e!.Message, Does.Contain(f.SlotName).And.Contain("start the move again"));
    }

    [TestCase("")]
    [TestCase("Upper")]
    [TestCase("a-b")]
    [TestCase("x'; drop table y; --")]
    public void A_move_id_that_cannot_name_a_slot_is_refused(string moveId)
    {
        var e = Assert.ThrowsAsync<ArgumentException>(() => BucketReplication.DropAsync("Host=unused", moveId, CancellationToken.None));

        Assert.That(e!.Message, Does.Contain("lower-case letters, digits or underscores"));
    }

    [Test]
    public async Task A_table_without_a_primary_key_is_refused_by_name()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint not null, name text)");

        var e = Assert.ThrowsAsync<BucketMoveException>(() => f.DescribeAsync("id"));

        Assert.That(e!.Message, Does.Contain(f.Table).And.Contain("no primary key or replica identity").And.Contain("ADD PRIMARY KEY"));
    }

    [Test]
    public async Task A_replica_identity_index_stands_in_for_a_primary_key()
    {
        await using var f = await MoveFixture.CreateAsync(
            "create table {0} (id bigint not null, name text); create unique index on {0} (id); alter table {0} replica identity using index {0}_id_idx");

        var table = await f.DescribeAsync("id");

        Assert.That(table.PrimaryKey, Is.EqualTo(new[] { "id" }));
        Assert.That(table.Columns, Is.EqualTo(new[] { "id", "name" }));
    }

    [TestCase("numeric")]
    [TestCase("date")]
    [TestCase("character(8)")]
    public async Task A_key_type_without_hash_placement_is_refused_by_name(string type)
    {
        await using var f = await MoveFixture.CreateAsync($"create table {{0}} (k {type} primary key)");

        var e = Assert.ThrowsAsync<BucketMoveException>(() => f.DescribeAsync("k"));

        Assert.That(e!.Message, Does.Contain(f.Table).And.Contain("no hash placement"));
    }

    [Test]
    public async Task A_missing_table_or_key_column_is_refused_by_name()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key)");

        var noColumn = Assert.ThrowsAsync<BucketMoveException>(() => f.DescribeAsync("customer_id"));
        await using var connection = new NpgsqlConnection(f.Source);
        await connection.OpenAsync();
        var noTable = Assert.ThrowsAsync<BucketMoveException>(() => MovedTables.DescribeAsync(connection, "no_such_table_x", "id", CancellationToken.None));

        Assert.That(noColumn!.Message, Does.Contain("\"customer_id\"").And.Contain(f.Table));
        Assert.That(noTable!.Message, Does.Contain("no_such_table_x"));
    }

    [Test]
    public async Task Verify_finds_no_mismatch_after_a_move_and_one_after_a_target_row_changes()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, name text, at timestamptz, f double precision)");
        await f.OnSourceAsync($"insert into {f.Table} select g, md5(g::text), now() - g * interval '1 s', g / 3.0 from generate_series(1, 10000) g");
        var table = await f.DescribeAsync("id");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        await move.CopyAsync(f.Target, Buckets, BucketCount, 2, NoneDone, static (_, _, _) => Task.CompletedTask, null, null, CancellationToken.None);

        var before = await BucketReplication.VerifyAsync(f.Source, f.Target, [table], Buckets, BucketCount, CancellationToken.None);
        var victim = (await MoveFixture.QueryAsync<long>(f.Target, $"select min(id) from {f.Table}"))[0];
        await f.OnTargetAsync($"update {f.Table} set name = name || '!' where id = {victim}");
        var changed = await BucketReplication.VerifyAsync(f.Source, f.Target, [table], Buckets, BucketCount, CancellationToken.None);
        await f.OnTargetAsync($"delete from {f.Table} where id = {victim}");
        var deleted = await BucketReplication.VerifyAsync(f.Source, f.Target, [table], Buckets, BucketCount, CancellationToken.None);

        var bucket = table.BucketOfText(victim.ToString(System.Globalization.CultureInfo.InvariantCulture), BucketCount);
        Assert.That(before, Is.Empty);
        Assert.That(changed, Has.Count.EqualTo(1));
        Assert.That(changed[0].Bucket, Is.EqualTo(bucket));
        Assert.That(changed[0].SourceRows, Is.EqualTo(changed[0].TargetRows), "same count, different content");
        Assert.That(deleted.Single().TargetRows, Is.EqualTo(deleted.Single().SourceRows - 1));
    }

    [Test]
    public async Task The_freeze_check_after_a_verify_snapshot_catches_a_row_written_since_that_differs_on_the_target()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, n int not null, note text)");
        await f.OnSourceAsync($"insert into {f.Table} select g, g, 'n' || g from generate_series(1, 4000) g");
        var table = await f.DescribeAsync("id");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        await move.CopyAsync(f.Target, Buckets, BucketCount, 2, NoneDone, static (_, _, _) => Task.CompletedTask, null, null, CancellationToken.None);
        await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);
        var moving = await MovingIdsAsync(f, table);

        await using var baseline = (await move.VerifyBeforeFreezeAsync(f.Target, Buckets, BucketCount, NoHold, CancellationToken.None))!;
        // Written after the snapshot: an update, an insert, a delete, a key that leaves the buckets.
        await f.OnSourceAsync($"update {f.Table} set n = -n where id = {moving[0]}");
        await f.OnSourceAsync($"insert into {f.Table} values ({moving[^1] + 100000}, 1, 'new')");
        await f.OnSourceAsync($"delete from {f.Table} where id = {moving[1]}");
        await f.OnSourceAsync($"update {f.Table} set id = -id where id = {moving[2]}");
        await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);
        move.StopRecording();
        var agree = await CheckNowAsync(f, baseline);
        // The catch-up applied that row wrongly (simulated on the target): the freeze's check must see it.
        await f.OnTargetAsync($"update {f.Table} set note = 'diverged' where id = {moving[0]}");
        var diverged = await CheckNowAsync(f, baseline);
        await f.OnTargetAsync($"delete from {f.Table} where id = {moving[0]}");
        var missing = await CheckNowAsync(f, baseline);

        Assert.That(baseline.Keys.Count, Is.GreaterThanOrEqualTo(5), "every key written since the snapshot, old and new");
        Assert.That(agree, Is.Empty);
        var bucket = table.BucketOfText(moving[0].ToString(System.Globalization.CultureInfo.InvariantCulture), BucketCount);
        Assert.That(diverged!.Select(m => m.Bucket), Is.EqualTo(new[] { bucket }));
        Assert.That(missing!.Single().TargetRows, Is.EqualTo(missing!.Single().SourceRows - 1));
    }

    [Test]
    public async Task A_rehearsal_before_the_freeze_sums_each_key_once_and_the_freeze_check_still_catches_differences_before_and_after_it()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, n int not null, note text)");
        await f.OnSourceAsync($"insert into {f.Table} select g, g, 'n' || g from generate_series(1, 4000) g");
        var table = await f.DescribeAsync("id");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        await move.CopyAsync(f.Target, Buckets, BucketCount, 2, NoneDone, static (_, _, _) => Task.CompletedTask, null, null, CancellationToken.None);
        await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);
        var moving = await MovingIdsAsync(f, table);
        // Wrong on the target at the snapshot, then written on the source (the catch-up repairs it): its snapshot rows
        // differ, so summing them twice would report a difference where there is none.
        await f.OnTargetAsync($"update {f.Table} set n = 0 where id = {moving[4]}");

        await using var baseline = (await move.VerifyBeforeFreezeAsync(f.Target, Buckets, BucketCount, NoHold, CancellationToken.None))!;
        // Keys written before the rehearsal (summed there), written again after it, and keys first written after it.
        await f.OnSourceAsync($"update {f.Table} set n = -n where id in ({moving[0]}, {moving[1]}, {moving[4]})");
        await f.OnSourceAsync($"delete from {f.Table} where id = {moving[2]}");
        await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);
        await CheckNowAsync(f, baseline, rehearsal: true);
        await CheckNowAsync(f, baseline, rehearsal: true); // a second rehearsal (a freeze tried again) adds nothing twice
        await f.OnSourceAsync($"update {f.Table} set n = 7 where id = {moving[0]}");
        await f.OnSourceAsync($"update {f.Table} set note = 'late' where id = {moving[3]}");
        await f.OnSourceAsync($"insert into {f.Table} values ({moving[^1] + 100000}, 1, 'new')");
        await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);
        move.StopRecording();
        var agree = await CheckNowAsync(f, baseline);
        // Wrong on the target: a key recorded before the rehearsal, then one recorded only after it.
        await f.OnTargetAsync($"update {f.Table} set note = 'diverged' where id = {moving[1]}");
        var before = await CheckNowAsync(f, baseline);
        await f.OnTargetAsync($"update {f.Table} set note = 'n' || id where id = {moving[1]}");
        var repaired = await CheckNowAsync(f, baseline);
        await f.OnTargetAsync($"update {f.Table} set note = 'diverged' where id = {moving[3]}");
        var after = await CheckNowAsync(f, baseline);

        string Text(long id) => id.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(agree, Is.Empty, "each key's snapshot rows summed once, whether before or in the freeze");
        Assert.That(before!.Select(m => m.Bucket), Is.EqualTo(new[] { table.BucketOfText(Text(moving[1]), BucketCount) }));
        Assert.That(repaired, Is.Empty);
        Assert.That(after!.Select(m => m.Bucket), Is.EqualTo(new[] { table.BucketOfText(Text(moving[3]), BucketCount) }));
    }

    [Test]
    public async Task The_freeze_check_catches_a_difference_present_at_the_verify_snapshot_and_leaves_incomplete_keys_to_the_full_check()
    {
        await using var f = await MoveFixture.CreateAsync("create table {0} (id bigint primary key, n int not null)");
        await f.OnSourceAsync($"insert into {f.Table} select g, g from generate_series(1, 3000) g");
        var table = await f.DescribeAsync("id");
        await using var move = await BucketReplication.StartAsync(f.Source, f.MoveId, [table], CancellationToken.None);
        await move.CopyAsync(f.Target, Buckets, BucketCount, 2, NoneDone, static (_, _, _) => Task.CompletedTask, null, null, CancellationToken.None);
        await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);
        var moving = await MovingIdsAsync(f, table);
        await f.OnTargetAsync($"update {f.Table} set n = 0 where id = {moving[3]}"); // wrong before the snapshot, never written again

        await using (var baseline = (await move.VerifyBeforeFreezeAsync(f.Target, Buckets, BucketCount, NoHold, CancellationToken.None))!)
        {
            await f.OnSourceAsync($"update {f.Table} set n = n + 1 where id = {moving[0]}");
            await move.CatchUpAsync(f.Target, Buckets, BucketCount, await f.SourceLsnAsync(), CancellationToken.None);
            move.StopRecording();
            var found = await CheckNowAsync(f, baseline);

            var bucket = table.BucketOfText(moving[3].ToString(System.Globalization.CultureInfo.InvariantCulture), BucketCount);
            Assert.That(found!.Select(m => m.Bucket), Is.EqualTo(new[] { bucket }));
        }

        await f.OnTargetAsync($"update {f.Table} set n = id where id = {moving[3]}");
        await using (var baseline = (await move.VerifyBeforeFreezeAsync(f.Target, Buckets, BucketCount, NoHold, CancellationToken.None))!)
        {
            // (A truncate of the source cannot run while the snapshot is open; the stream marks the keys incomplete when one comes.)
            baseline.Keys.MarkIncomplete();
            move.StopRecording();

            Assert.That(await CheckNowAsync(f, baseline), Is.Null, "keys that name no rows: the full comparison decides");
        }
    }

    private static readonly Func<CancellationToken, Task<IAsyncDisposable?>> NoHold =
        static _ => Task.FromResult<IAsyncDisposable?>(new NoWriters()); // these tests write only between the steps

    private static async Task<List<long>> MovingIdsAsync(MoveFixture f, MovedTable table) =>
        await MoveFixture.QueryAsync<long>(f.Source,
            $"select id from {f.Table} where ({table.BucketSql(BucketCount)})::int = any(@Buckets) order by id", new { Buckets });

    private static async Task<IReadOnlyList<ChunkMismatch>?> CheckNowAsync(MoveFixture f, BucketReplication.VerifyBaseline baseline, bool rehearsal = false)
    {
        await using var source = new NpgsqlConnection(f.Source);
        await using var target = new NpgsqlConnection(f.Target);
        await source.OpenAsync();
        await target.OpenAsync();
        await new NpgsqlCommand(BucketReplication.VerifySettings, source).ExecuteNonQueryAsync();
        await new NpgsqlCommand(BucketReplication.VerifySettings, target).ExecuteNonQueryAsync();
        return await baseline.CheckAsync(source, target, rehearsal, CancellationToken.None);
    }

    private sealed class NoWriters : IAsyncDisposable
    {
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    private sealed class LastValue : IProgress<long>
    {
        private long _value;

        public long Value => Interlocked.Read(ref _value);

        public void Report(long value)
        {
            long seen;
            while ((seen = Interlocked.Read(ref _value)) < value && Interlocked.CompareExchange(ref _value, value, seen) != seen)
            {
            }
        }
    }

    private static string Seed(string table, string key, int from, int to) =>
        $"insert into {table} select {key}, g, 'note ' || g, case when g % 50 = 0 then (select string_agg(md5(random()::text || i), '') from generate_series(1, 400) i) end " +
        $"from generate_series({from}, {to}) g";

    private static async Task<int> WriteUntilStoppedAsync(MoveFixture f, CancellationToken stop)
    {
        var written = 0;
        await using var connection = new NpgsqlConnection(f.Source);
        await connection.OpenAsync(CancellationToken.None);
        do
        {
            // Leaves the TOASTed column alone: pgoutput sends it as unchanged, the target must keep its copy.
            await using var command = new NpgsqlCommand($"update {f.Table} set note = coalesce(note, '') || '+' where n % 97 = {written % 97}", connection);
            await command.ExecuteNonQueryAsync(CancellationToken.None);
            written++;
        }
        while (!stop.IsCancellationRequested);

        return written;
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition)
    {
        for (var i = 0; i < 100 && !await condition(); i++)
        {
            await Task.Delay(100);
        }
    }
}

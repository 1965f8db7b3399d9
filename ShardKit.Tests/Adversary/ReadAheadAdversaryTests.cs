using System.Collections.Concurrent;
using Dapper;
using Npgsql;

namespace ShardKit.Tests.Adversary;

/// <summary>
/// Attacks on the fan-out read-ahead (each shard's rows read and parsed a batch of 256 ahead on the thread pool, a batch
/// handed over as soon as the next row is not in, a shard's failure thrown after the rows before it), as a user would:
/// cancelling and leaving streams at and around batch boundaries, takes, ordered merges, large and many rows, every row
/// shape Dapper maps, shards cut, timed out or failing on the server part way, and a read stopped early inside a
/// distributed transaction. After each: the connection runs the next command, no query runs on on the servers, no row is
/// lost or duplicated, no task exception goes unobserved, and the errors are the documented ones.
/// </summary>
[TestFixture]
public sealed class ReadAheadAdversaryTests
{
    private const string Ddl = "create table {0} (id bigint)";

    private static readonly ConcurrentQueue<Exception> Unobserved = new();

    private static void OnUnobserved(object? sender, UnobservedTaskExceptionEventArgs e) => Unobserved.Enqueue(e.Exception);

    [OneTimeSetUp]
    public void HookUnobserved() => TaskScheduler.UnobservedTaskException += OnUnobserved;

    [OneTimeTearDown]
    public void UnhookUnobserved() => TaskScheduler.UnobservedTaskException -= OnUnobserved;

    [SetUp]
    public void ClearUnobserved() => Unobserved.Clear();

    private static void AssertNoUnobservedExceptions()
    {
        for (var i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }

        Assert.That(Unobserved.Select(e => e.ToString()), Is.Empty, "a task's exception went unobserved");
    }

    public sealed class Item
    {
        public int G { get; set; }

        public string? Name { get; set; }

        public long? Maybe { get; set; }
    }

    public sealed record ItemRecord(int G, string Name);

    private static string Marker(string stem) => stem + "_" + Guid.NewGuid().ToString("N");

    private static int PortOf(ShardTestContext ctx, int shard) => new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[shard]).Port;

    // Every shard's rows, as received in order, are 1..n each exactly once (none lost, none duplicated, order kept).
    private static void AssertPrefixes(Dictionary<string, List<int>> perShard, Func<string, int?>? exactly = null)
    {
        foreach (var (shard, rows) in perShard)
        {
            Assert.That(rows, Is.EqualTo(Enumerable.Range(1, rows.Count)), $"{shard}'s rows are not 1..{rows.Count} in order, once each");
            if (exactly?.Invoke(shard) is { } n)
            {
                Assert.That(rows, Has.Count.EqualTo(n), $"rows of {shard}");
            }
        }
    }

    private static async Task AssertUsableAsync(ShardedConnection db, ShardTestContext ctx)
    {
        Assert.That(await db.AllShards().QueryAsync<int>("select g from generate_series(1, 700) g"), Has.Count.EqualTo(700 * ctx.Shards.Count),
            "the connection runs the next fan-out");
        Assert.That(await db.AllShards().ExecuteScalarAsync("select count(*) from generate_series(1, 10)", Merge.Count()), Is.EqualTo(10L * ctx.Shards.Count));
    }

    // ---------------------------------------------------------------- the caller's token, mid-stream

    [TestCase(1)]
    [TestCase(255)]
    [TestCase(256)]
    [TestCase(257)]
    [TestCase(1000)]
    public async Task Cancelling_the_callers_token_after_n_rows_stops_the_stream_and_the_servers(int n)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = Marker("cancel");
        using var cts = new CancellationTokenSource();
        var perShard = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        var afterCancel = 0;
        var taken = 0;
        Exception? error = null;
        try
        {
            await foreach (var row in db.AllShards().QueryUnbufferedAsync<int>($"select generate_series(1, 50000000) /* {marker} */")
                               .WithShardNames().WithCancellation(cts.Token))
            {
                perShard[row.Shard].Add(row.Row);
                if (cts.IsCancellationRequested)
                {
                    afterCancel++;
                }

                if (++taken == n)
                {
                    await cts.CancelAsync();
                }
            }
        }
        catch (Exception e)
        {
            error = e;
        }

        TestContext.Out.WriteLine($"rows after the cancel: {afterCancel}");
        Assert.That(error, Is.InstanceOf<OperationCanceledException>(), $"{error}");
        Assert.That(afterCancel, Is.LessThan(200_000), "the stream went on long after its token was cancelled");
        AssertPrefixes(perShard);
        await ctx.AssertNotRunningAsync(marker);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    [TestCase(1)]
    [TestCase(256)]
    [TestCase(257)]
    public async Task Cancelling_the_callers_token_of_an_ordered_stream_after_n_rows_stops_it(int n)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = Marker("cancel_ordered");
        using var cts = new CancellationTokenSource();
        var perShard = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        var taken = 0;
        Exception? error = null;
        try
        {
            await foreach (var row in db.AllShards().QueryUnbufferedAsync<int>($"select generate_series(1, 50000000) as g /* {marker} */", null,
                               Merge.OrderBy<int, int>(g => g)).WithShardNames().WithCancellation(cts.Token))
            {
                perShard[row.Shard].Add(row.Row);
                if (++taken == n)
                {
                    await cts.CancelAsync();
                }
            }
        }
        catch (Exception e)
        {
            error = e;
        }

        Assert.That(error, Is.InstanceOf<OperationCanceledException>(), $"{error}");
        AssertPrefixes(perShard);
        await ctx.AssertNotRunningAsync(marker);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // The token cancelled while every shard is waiting for its next row (a fill on the pool waits on the server).
    [Test]
    public async Task Cancelling_while_the_shards_are_slow_between_rows_stops_them()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = Marker("cancel_slow");
        using var cts = new CancellationTokenSource();
        var perShard = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        var taken = 0;
        Exception? error = null;
        try
        {
            var sql = $"select g::int from generate_series(1, 100000) g, lateral (select pg_sleep(case when g % 300 = 0 then 1 else 0 end)) s /* {marker} */";
            await foreach (var row in db.AllShards().QueryUnbufferedAsync<int>(sql).WithShardNames().WithCancellation(cts.Token))
            {
                perShard[row.Shard].Add(row.Row);
                if (++taken == 4 * 299)
                {
                    cts.CancelAfter(200);
                }
            }
        }
        catch (Exception e)
        {
            error = e;
        }

        Assert.That(error, Is.InstanceOf<OperationCanceledException>(), $"{error}");
        AssertPrefixes(perShard);
        await ctx.AssertNotRunningAsync(marker);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // ---------------------------------------------------------------- leaving early

    [TestCase(1, false)]
    [TestCase(255, false)]
    [TestCase(256, false)]
    [TestCase(257, false)]
    [TestCase(1000, false)]
    [TestCase(1, true)]
    [TestCase(256, true)]
    [TestCase(257, true)]
    [TestCase(1000, true)]
    public async Task Breaking_out_after_n_rows_leaves_no_query_running_and_the_connection_usable(int n, bool ordered)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = Marker("break");
        var perShard = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        var sql = $"select generate_series(1, 50000000) as g /* {marker} */"; // already in order: streamed, not sorted first
        var taken = 0;
        await foreach (var row in db.AllShards().QueryUnbufferedAsync<int>(sql, null, ordered ? Merge.OrderBy<int, int>(g => g) : null).WithShardNames())
        {
            perShard[row.Shard].Add(row.Row);
            if (++taken == n)
            {
                break;
            }
        }

        Assert.That(taken, Is.EqualTo(n));
        AssertPrefixes(perShard);
        await ctx.AssertNotRunningAsync(marker);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // Left while the next batches are being filled from shards that send their rows in bursts (a fill hands over a part
    // batch and leaves its read waiting on the server).
    [TestCase(100)]
    [TestCase(257)]
    [TestCase(1200)]
    public async Task Breaking_out_while_a_batch_is_being_filled_from_a_slow_shard(int n)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = Marker("filling");
        var perShard = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        var sql = $"select g::int from generate_series(1, 100000) g, lateral (select pg_sleep(case when g % 97 = 0 then 0.05 else 0 end)) s /* {marker} */";
        var taken = 0;
        await using (var rows = db.AllShards().QueryUnbufferedAsync<int>(sql).WithShardNames().GetAsyncEnumerator())
        {
            while (await rows.MoveNextAsync())
            {
                perShard[rows.Current.Shard].Add(rows.Current.Row);
                if (++taken == n)
                {
                    break;
                }

                if (taken % 50 == 0)
                {
                    await Task.Delay(5); // the caller is slower than the shards now and then: fills run ahead
                }
            }
        }

        AssertPrefixes(perShard);
        await ctx.AssertNotRunningAsync(marker);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // ---------------------------------------------------------------- takes and ordered merges

    [TestCase(1)]
    [TestCase(255)]
    [TestCase(256)]
    [TestCase(257)]
    [TestCase(511)]
    [TestCase(512)]
    [TestCase(513)]
    [TestCase(1025)]
    public async Task An_ordered_take_around_batch_boundaries_returns_exactly_the_first_rows(int n)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var shards = ctx.Shards.Count;
        // Shard i holds the values congruent to i modulo the shard count: the merged order interleaves every shard.
        for (var i = 0; i < shards; i++)
        {
            await ctx.DirectAsync<long>(ctx.Shards.Names[i],
                $"with ins as (insert into {ctx.Table} select g * {shards} + {i} from generate_series(0, 9999) g returning 1) select count(*) from ins");
        }

        var expected = Enumerable.Range(0, n).Select(v => (long)v).ToList();
        var sql = $"select id from {ctx.Table} order by id";
        var collected = await db.AllShards().QueryAsync<long>(sql, null, Merge.OrderBy<long, long>(v => v).Take(n));
        Assert.That(collected, Is.EqualTo(expected), "collected");

        var streamed = new List<long>();
        await foreach (var v in db.AllShards().QueryUnbufferedAsync<long>(sql, null, Merge.OrderBy<long, long>(v => v).Take(n)))
        {
            streamed.Add(v);
        }

        Assert.That(streamed, Is.EqualTo(expected), "streamed");

        // An unordered take (arrival order): n distinct rows of the table.
        var arrival = await db.AllShards().QueryAsync<long>(sql.Replace(" order by id", ""), null, Merge.Concat<long>().Take(n));
        Assert.That(arrival, Has.Count.EqualTo(n));
        Assert.That(arrival, Is.Unique);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // LINQ's Take on the stream (System.Linq.Async is not needed: a manual count), then the next command.
    [TestCase(200_000, true)]
    [TestCase(200_000, false)]
    public async Task Many_rows_arrive_once_each_streamed_and_collected(int perShard, bool ordered)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var sql = $"select g from generate_series(1, {perShard}) g" + (ordered ? " order by g" : "");
        var plan = ordered ? Merge.OrderBy<int, int>(g => g) : null;
        var rows = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        var previous = int.MinValue;
        await foreach (var row in db.AllShards().QueryUnbufferedAsync<int>(sql, null, plan).WithShardNames())
        {
            rows[row.Shard].Add(row.Row);
            if (ordered)
            {
                Assert.That(row.Row, Is.GreaterThanOrEqualTo(previous));
                previous = row.Row;
            }
        }

        AssertPrefixes(rows, _ => perShard);

        var collected = await db.AllShards().QueryWithShardAsync<int>(sql, null, plan);
        Assert.That(collected, Has.Count.EqualTo(perShard * ctx.Shards.Count));
        AssertPrefixes(collected.GroupBy(r => r.Shard).ToDictionary(g => g.Key, g => g.Select(r => r.Row).ToList()), _ => perShard);
        AssertNoUnobservedExceptions();
    }

    // ---------------------------------------------------------------- row shapes

    [TestCase(true)]
    [TestCase(false)]
    public async Task Large_rows_arrive_whole_and_once_each(bool ordered)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        const int perShard = 600;
        var sql = $"select g, repeat(chr(65 + g % 26), 100000) as name from generate_series(1, {perShard}) g" + (ordered ? " order by g" : "");
        var rows = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        await foreach (var row in db.AllShards().QueryUnbufferedAsync<Item>(sql, null, ordered ? Merge.OrderBy<Item, int>(i => i.G) : null).WithShardNames())
        {
            Assert.That(row.Row.Name, Has.Length.EqualTo(100000));
            Assert.That(row.Row.Name![0], Is.EqualTo((char)(65 + row.Row.G % 26)));
            Assert.That(row.Row.Name[^1], Is.EqualTo((char)(65 + row.Row.G % 26)));
            rows[row.Shard].Add(row.Row.G);
        }

        AssertPrefixes(rows, _ => perShard);

        // And left early in the middle of a batch of large rows.
        var marker = Marker("large");
        var taken = 0;
        await foreach (var _ in db.AllShards().QueryUnbufferedAsync<Item>(
                           $"select g, repeat('x', 100000) as name from generate_series(1, 100000) g /* {marker} */"))
        {
            if (++taken == 300)
            {
                break;
            }
        }

        await ctx.AssertNotRunningAsync(marker);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    [TestCase("class")]
    [TestCase("record")]
    [TestCase("tuple")]
    [TestCase("dynamic")]
    [TestCase("string")]
    [TestCase("nullable")]
    public async Task Every_row_shape_maps_every_row_once(string shape)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        const int perShard = 1500;
        var source = $"from generate_series(1, {perShard}) g";
        var streamed = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        switch (shape)
        {
            case "class":
                await foreach (var r in db.AllShards().QueryUnbufferedAsync<Item>(
                                   $"select g, 'n' || g as name, case when g % 3 = 0 then null else g * 10 end as maybe {source}").WithShardNames())
                {
                    Assert.That(r.Row.Name, Is.EqualTo("n" + r.Row.G));
                    Assert.That(r.Row.Maybe, Is.EqualTo(r.Row.G % 3 == 0 ? null : r.Row.G * 10L));
                    streamed[r.Shard].Add(r.Row.G);
                }

                break;
            case "record":
                await foreach (var r in db.AllShards().QueryUnbufferedAsync<ItemRecord>($"select g, 'n' || g as name {source}").WithShardNames())
                {
                    Assert.That(r.Row.Name, Is.EqualTo("n" + r.Row.G));
                    streamed[r.Shard].Add(r.Row.G);
                }

                break;
            case "tuple":
                await foreach (var r in db.AllShards().QueryUnbufferedAsync<(int G, string Name)>($"select g, 'n' || g as name {source}").WithShardNames())
                {
                    Assert.That(r.Row.Name, Is.EqualTo("n" + r.Row.G));
                    streamed[r.Shard].Add(r.Row.G);
                }

                break;
            case "dynamic":
                await foreach (var r in db.AllShards().QueryUnbufferedAsync<dynamic>($"select g, 'n' || g as name {source}").WithShardNames())
                {
                    int g = r.Row.g;
                    string name = r.Row.name;
                    Assert.That(name, Is.EqualTo("n" + g));
                    streamed[r.Shard].Add(g);
                }

                break;
            case "string":
                var seen = ctx.Shards.Names.ToDictionary(s => s, _ => new List<string?>());
                await foreach (var r in db.AllShards().QueryUnbufferedAsync<string?>(
                                   $"select case when g % 7 = 0 then null else 'n' || g end {source}").WithShardNames())
                {
                    seen[r.Shard].Add(r.Row);
                }

                var expected = Enumerable.Range(1, perShard).Select(g => g % 7 == 0 ? null : "n" + g).ToList();
                foreach (var (shard, values) in seen)
                {
                    Assert.That(values, Is.EqualTo(expected), shard);
                    streamed[shard].AddRange(Enumerable.Range(1, values.Count));
                }

                break;
            default:
                var nullable = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int?>());
                await foreach (var r in db.AllShards().QueryUnbufferedAsync<int?>($"select case when g % 5 = 0 then null else g end {source}").WithShardNames())
                {
                    nullable[r.Shard].Add(r.Row);
                }

                var expectedNullable = Enumerable.Range(1, perShard).Select(g => g % 5 == 0 ? (int?)null : g).ToList();
                foreach (var (shard, values) in nullable)
                {
                    Assert.That(values, Is.EqualTo(expectedNullable), shard);
                    streamed[shard].AddRange(Enumerable.Range(1, values.Count));
                }

                break;
        }

        AssertPrefixes(streamed, _ => perShard);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // ---------------------------------------------------------------- a shard failing part way

    [TestCase(1, "partial-streamed")]
    [TestCase(256, "partial-streamed")]
    [TestCase(257, "partial-streamed")]
    [TestCase(513, "partial-streamed")]
    [TestCase(1, "partial-collected")]
    [TestCase(257, "partial-collected")]
    [TestCase(1, "complete-streamed")]
    [TestCase(256, "complete-streamed")]
    [TestCase(257, "complete-streamed")]
    [TestCase(513, "complete-streamed")]
    [TestCase(513, "complete-collected")]
    [TestCase(257, "partial-ordered")]
    [TestCase(513, "complete-ordered")]
    public async Task A_server_error_at_row_n_keeps_the_rows_before_it_and_names_the_shard(int n, string how)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var badPort = PortOf(ctx, 1);
        var partial = how.StartsWith("partial", StringComparison.Ordinal);
        var ordered = how.EndsWith("ordered", StringComparison.Ordinal);
        var options = new FanOutOptions { Policy = partial ? FanOutPolicy.PartialResults : FanOutPolicy.CompleteResults };
        const int perShard = 3000;
        var sql = $"select g from generate_series(1, {perShard}) g where 1 / (case when g = {n} and inet_server_port() = {badPort} then 0 else 1 end) = 1"; // no order by, also when merged in order: a sort would fail before the first row
        var plan = ordered ? Merge.OrderBy<int, int>(g => g) : null;
        var rows = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        IReadOnlyList<ShardFailure>? failures = null;
        Exception? error = null;
        try
        {
            if (how.EndsWith("collected", StringComparison.Ordinal))
            {
                var result = await db.AllShards(options).QueryWithShardAsync<int>(sql, null, plan);
                foreach (var r in result)
                {
                    rows[r.Shard].Add(r.Row);
                }

                failures = result.Failures;
            }
            else
            {
                var stream = db.AllShards(options).QueryUnbufferedAsync<int>(sql, null, plan);
                await foreach (var r in stream.WithShardNames())
                {
                    rows[r.Shard].Add(r.Row);
                }

                failures = stream.Failures;
            }
        }
        catch (Exception e)
        {
            error = e;
        }

        AssertPrefixes(rows);
        if (partial)
        {
            Assert.That(error, Is.Null, $"{error}");
            Assert.That(failures!.Select(f => f.Shard), Is.EqualTo(new[] { "s1" }));
            Assert.That(failures![0].Error, Is.InstanceOf<PostgresException>().With.Property("SqlState").EqualTo("22012"));
            var fromBad = how == "partial-collected" ? 0 : n - 1;
            Assert.That(rows["s1"], Has.Count.EqualTo(fromBad), "s1's rows before its failure");
            foreach (var shard in ctx.Shards.Names.Where(s => s != "s1"))
            {
                Assert.That(rows[shard], Has.Count.EqualTo(ordered ? rows[shard].Count : perShard), shard);
            }

            if (!ordered)
            {
                Assert.That(rows.Values.Sum(r => r.Count), Is.EqualTo(perShard * (ctx.Shards.Count - 1) + fromBad));
            }
        }
        else
        {
            Assert.That(error, Is.InstanceOf<ShardAggregateException>(), $"{error}");
            var aggregate = (ShardAggregateException)error!;
            Assert.That(aggregate.FailedShards, Is.EqualTo(new[] { "s1" }));
            Assert.That(aggregate.InnerExceptions[0], Is.InstanceOf<PostgresException>().With.Property("SqlState").EqualTo("22012"));
            Assert.That(rows["s1"], Has.Count.LessThanOrEqualTo(n - 1), "a row of s1 past its failure");
        }

        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // ---------------------------------------------------------------- a shard cut or timed out part way

    [TestCase(true)]
    [TestCase(false)]
    public async Task A_shard_cut_mid_stream_ends_its_rows_with_a_connection_failure(bool partial)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        await db.AllShards().ExecuteAsync("select 1");
        var marker = Marker("cut");
        var options = new FanOutOptions { Policy = partial ? FanOutPolicy.PartialResults : FanOutPolicy.CompleteResults };
        var sql = $"select g::int from generate_series(1, 3000) g, lateral (select pg_sleep(case when g % 500 = 0 then 0.3 else 0 end)) s /* {marker} */";
        var rows = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        var stream = db.AllShards(options).QueryUnbufferedAsync<int>(sql);
        Exception? error = null;
        try
        {
            await foreach (var r in stream.WithShardNames())
            {
                rows[r.Shard].Add(r.Row);
                if (r.Shard == "s2" && r.Row == 700)
                {
                    ctx.Proxies[2].Cut();
                }
            }
        }
        catch (Exception e)
        {
            error = e;
        }

        ctx.Proxies[2].Restore();
        AssertPrefixes(rows);
        Assert.That(rows["s2"], Has.Count.GreaterThanOrEqualTo(700).And.Count.LessThan(3000));
        Exception shardError;
        if (partial)
        {
            Assert.That(error, Is.Null, $"{error}");
            Assert.That(stream.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s2" }));
            foreach (var shard in ctx.Shards.Names.Where(s => s != "s2"))
            {
                Assert.That(rows[shard], Has.Count.EqualTo(3000), shard);
            }

            shardError = stream.Failures[0].Error;
        }
        else
        {
            Assert.That(error, Is.InstanceOf<ShardAggregateException>(), $"{error}");
            Assert.That(((ShardAggregateException)error!).FailedShards, Is.EqualTo(new[] { "s2" }));
            shardError = ((ShardAggregateException)error!).InnerExceptions[0];
        }

        TestContext.Out.WriteLine($"s2's error: {shardError}");
        Assert.That(shardError, Is.InstanceOf<ShardConnectionException>().Or.InstanceOf<NpgsqlException>().And.Not.InstanceOf<PostgresException>());
        await ctx.AssertNotRunningAsync(marker);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    [TestCase(true)]
    [TestCase(false)]
    public async Task A_per_shard_timeout_firing_mid_stream_is_a_timeout_of_that_shard(bool partial)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await db.AllShards().ExecuteAsync("select 1");
        var marker = Marker("timeout");
        var slowPort = PortOf(ctx, 3);
        var options = new FanOutOptions
        {
            Policy = partial ? FanOutPolicy.PartialResults : FanOutPolicy.CompleteResults,
            PerShardTimeout = TimeSpan.FromSeconds(3),
        };
        // s3 sends 600 rows at once, then one row every 100 ms: its timeout fires between two of its rows.
        var sql = $"select g::int from generate_series(1, 2000) g, lateral (select pg_sleep(case when inet_server_port() = {slowPort} and g > 600 then 0.1 else 0 end)) s /* {marker} */";
        var rows = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        var stream = db.AllShards(options).QueryUnbufferedAsync<int>(sql);
        Exception? error = null;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var lastS3 = TimeSpan.Zero;
        try
        {
            await foreach (var r in stream.WithShardNames())
            {
                rows[r.Shard].Add(r.Row);
                if (r.Shard == "s3")
                {
                    lastS3 = watch.Elapsed;
                }
            }
        }
        catch (Exception e)
        {
            error = e;
        }

        TestContext.Out.WriteLine($"stream ended after {watch.Elapsed.TotalMilliseconds:F0} ms; s3's last row at {lastS3.TotalMilliseconds:F0} ms; s3 rows {rows["s3"].Count}; error {error?.GetType().Name}");
        AssertPrefixes(rows);
        if (partial)
        {
            Assert.That(error, Is.Null, $"{error}");
            Assert.That(stream.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s3" }));
            Assert.That(stream.Failures[0].Error, Is.InstanceOf<ShardTimeoutException>());
            Assert.That(rows["s3"], Has.Count.GreaterThanOrEqualTo(600).And.Count.LessThan(2000));
            foreach (var shard in ctx.Shards.Names.Where(s => s != "s3"))
            {
                Assert.That(rows[shard], Has.Count.EqualTo(2000), shard);
            }
        }
        else
        {
            Assert.That(error, Is.InstanceOf<ShardAggregateException>(), $"{error}");
            Assert.That(((ShardAggregateException)error!).FailedShards, Is.EqualTo(new[] { "s3" }));
            Assert.That(((ShardAggregateException)error!).InnerExceptions[0], Is.InstanceOf<ShardTimeoutException>());
        }

        await ctx.AssertNotRunningAsync(marker);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // ---------------------------------------------------------------- inside a distributed transaction

    [TestCase(1, "stream")]
    [TestCase(255, "stream")]
    [TestCase(256, "stream")]
    [TestCase(257, "stream")]
    [TestCase(1000, "stream")]
    [TestCase(257, "ordered stream")]
    [TestCase(257, "take")]
    [TestCase(513, "take")]
    public async Task A_fan_out_read_stopped_early_inside_a_distributed_transaction_leaves_it_committable(int n, string how)
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint not null, id bigint not null, primary key (customer_id, id))");
        await using var db = ctx.Source.CreateConnection();
        var a = 1L;
        var b = Enumerable.Range(2, 1000).Select(i => (long)i).First(k => ctx.Source.ShardFor(k) != ctx.Source.ShardFor(a));
        await using var tx = await db.BeginDistributedTransactionAsync();
        await db.ForKey(a).ExecuteAsync($"insert into {ctx.Table} (customer_id, id) values (@a, 1)", new { a });
        await db.ForKey(b).ExecuteAsync($"insert into {ctx.Table} (customer_id, id) values (@b, 2)", new { b });
        var perShard = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        var taken = 0;
        switch (how)
        {
            case "take":
                var took = await db.AllShards().QueryAsync<int>("select g from generate_series(1, 20000) g order by g", null, Merge.OrderBy<int, int>(g => g).Take(n));
                Assert.That(took, Is.EqualTo(Enumerable.Range(1, 20000).SelectMany(g => Enumerable.Repeat(g, ctx.Shards.Count)).Take(n)));
                break;
            default:
                var ordered = how == "ordered stream";
                await foreach (var r in db.AllShards().QueryUnbufferedAsync<int>("select g from generate_series(1, 20000) g" + (ordered ? " order by g" : ""), null,
                                   ordered ? Merge.OrderBy<int, int>(g => g) : null).WithShardNames())
                {
                    perShard[r.Shard].Add(r.Row);
                    if (++taken == n)
                    {
                        break;
                    }
                }

                AssertPrefixes(perShard);
                break;
        }

        // More commands on the same connection, in the transaction: a fan-out read of the transaction's own rows, a write.
        Assert.That(await db.AllShards().ExecuteScalarAsync($"select count(*) from {ctx.Table}", Merge.Count()), Is.EqualTo(2L));
        Assert.That(await db.AllShards().QueryAsync<int>("select g from generate_series(1, 600) g"), Has.Count.EqualTo(600 * ctx.Shards.Count));
        await db.ForKey(a).ExecuteAsync($"insert into {ctx.Table} (customer_id, id) values (@a, 3)", new { a });
        await tx.CommitAsync();

        long total = 0;
        foreach (var shard in ctx.Shards.Names)
        {
            total += (await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"))[0];
            Assert.That((await ctx.DirectAsync<long>(shard, "select count(*) from pg_prepared_xacts"))[0], Is.Zero, $"a prepared transaction left on {shard}");
        }

        Assert.That(total, Is.EqualTo(3));
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // A shard failing part way inside a distributed transaction: the read throws the documented error after the rows
    // before it; the transaction can no longer commit (a command failed in it), and afterwards the connection is usable.
    [Test]
    public async Task A_shard_failing_mid_stream_inside_a_distributed_transaction_fails_its_commit_and_leaves_the_connection_usable()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var badPort = PortOf(ctx, 1);
        await using (var tx = await db.BeginDistributedTransactionAsync())
        {
            var rows = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
            var error = Assert.CatchAsync(async () =>
            {
                await foreach (var r in db.AllShards().QueryUnbufferedAsync<int>(
                                   $"select g from generate_series(1, 3000) g where 1 / (case when g = 257 and inet_server_port() = {badPort} then 0 else 1 end) = 1")
                                   .WithShardNames())
                {
                    rows[r.Shard].Add(r.Row);
                }
            });
            Assert.That(error, Is.InstanceOf<ShardAggregateException>(), $"{error}");
            AssertPrefixes(rows);
            Assert.That(rows["s1"], Has.Count.LessThanOrEqualTo(256));
            Assert.CatchAsync(async () => await tx.CommitAsync());
        }

        Assert.That(db.CurrentDistributedTransaction, Is.Null);
        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That((await ctx.DirectAsync<long>(shard, "select count(*) from pg_prepared_xacts"))[0], Is.Zero, $"a prepared transaction left on {shard}");
        }

        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // ---------------------------------------------------------------- memory and mapping failures

    // FanOutStream's docs: "nothing is buffered beyond what the merge needs (one row per shard for an ordered merge)";
    // the README: a stream's memory stays proportional to the shards, not the rows. With rows of 100 kB that must still
    // hold: the same 64 MB bound the README's million-row test uses.
    [Test]
    [NonParallelizable]
    public async Task An_ordered_stream_of_large_rows_holds_memory_proportional_to_the_shards_not_the_rows()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var before = GC.GetTotalMemory(forceFullCollection: true);
        long peak = 0, count = 0;
        await foreach (var item in db.AllShards().QueryUnbufferedAsync<Item>(
                           "select g, repeat('x', 100000) as name from generate_series(1, 1500) g", null, Merge.OrderBy<Item, int>(i => i.G)))
        {
            Assert.That(item.Name, Has.Length.EqualTo(100000));
            if (++count % 300 == 0)
            {
                peak = Math.Max(peak, GC.GetTotalMemory(forceFullCollection: true) - before);
            }
        }

        TestContext.Out.WriteLine($"peak live memory growth: {peak / 1024 / 1024} MB");
        Assert.That(count, Is.EqualTo(1500 * ctx.Shards.Count));
        Assert.That(peak, Is.LessThan(64L * 1024 * 1024), $"live memory grew by {peak / 1024 / 1024} MB while streaming");
        AssertNoUnobservedExceptions();
    }

    // A row Dapper cannot map (a null into an int) part way through a large result: the documented error naming the
    // shard, no query left running, the connection usable.
    [TestCase(1)]
    [TestCase(300)]
    public async Task A_row_that_cannot_be_mapped_part_way_fails_the_read_and_stops_the_query(int n)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = Marker("unmappable");
        var badPort = PortOf(ctx, 2);
        var rows = ctx.Shards.Names.ToDictionary(s => s, _ => new List<int>());
        Exception? error = null;
        try
        {
            await foreach (var r in db.AllShards().QueryUnbufferedAsync<int>(
                               $"select case when g = {n} and inet_server_port() = {badPort} then null else g end from generate_series(1, 50000000) g /* {marker} */")
                               .WithShardNames())
            {
                rows[r.Shard].Add(r.Row);
            }
        }
        catch (Exception e)
        {
            error = e;
        }

        TestContext.Out.WriteLine($"{error}");
        Assert.That(error, Is.InstanceOf<ShardAggregateException>(), $"{error}");
        Assert.That(((ShardAggregateException)error!).FailedShards, Is.EqualTo(new[] { "s2" }));
        AssertPrefixes(rows);
        Assert.That(rows["s2"], Has.Count.LessThanOrEqualTo(n - 1));
        await ctx.AssertNotRunningAsync(marker);
        await AssertUsableAsync(db, ctx);
        AssertNoUnobservedExceptions();
    }

    // A per-shard timeout that fires while a shard is slow to send its next rows stops that shard's query then, not at
    // the command's own timeout (30 s): the collected read and a routed stream cancelled by its token read in sequential
    // access, where the cancel did not reach the server until then.
    [TestCase(false)]
    [TestCase(true)]
    public async Task A_per_shard_timeout_stops_a_collected_read_of_a_slow_shard_at_the_timeout(bool fewerSlots)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = Marker("collected-timeout");
        var slowPort = PortOf(ctx, 3);
        var sql = $"select g::int from generate_series(1, 2000) g, lateral (select pg_sleep(case when inet_server_port() = {slowPort} and g > 600 then 0.1 else 0 end)) s /* {marker} */";
        var options = new FanOutOptions { Policy = FanOutPolicy.PartialResults, PerShardTimeout = TimeSpan.FromSeconds(2), MaxParallelism = fewerSlots ? 2 : null };
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var result = await db.AllShards(options).QueryAsync<int>(sql);
        TestContext.Out.WriteLine($"ended after {watch.ElapsedMilliseconds} ms");
        Assert.That(result.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s3" }));
        Assert.That(result.Failures[0].Error, Is.InstanceOf<ShardTimeoutException>());
        Assert.That(result, Has.Count.EqualTo(2000 * (ctx.Shards.Count - 1)));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(20)), "the slow shard was stopped at its timeout, not at the command's 30 s");
        await ctx.AssertNotRunningAsync(marker);
        AssertNoUnobservedExceptions();
    }

    [Test]
    public async Task A_routed_stream_cancelled_while_the_shard_is_slow_stops_at_the_cancel()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = Marker("routed-cancel");
        var sql = $"select g::int from generate_series(1, 2000) g, lateral (select pg_sleep(case when g > 600 then 0.1 else 0 end)) s /* {marker} */";
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var rows = 0;
        var error = await CatchAsync(async () =>
        {
            await foreach (var _ in db.ForKey(1L).QueryUnbufferedAsync<int>(new CommandDefinition(sql, cancellationToken: cancel.Token)).WithCancellation(cancel.Token))
            {
                rows++;
            }
        });
        TestContext.Out.WriteLine($"ended after {watch.ElapsedMilliseconds} ms, {rows} rows, {error?.GetType().Name}");
        Assert.That(error, Is.InstanceOf<OperationCanceledException>(), $"{error}");
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(20)), "the stream stopped at the cancel, not at the command's 30 s");
        await ctx.AssertNotRunningAsync(marker);
        Assert.That(await db.ForKey(1L).ExecuteScalarAsync<int>("select 1"), Is.EqualTo(1));
    }

    private static Task<Exception?> CatchAsync(Func<Task> action) => ReshardingAdversaryTests.CatchAsync(action);
}

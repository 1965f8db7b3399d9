using Dapper;
using Npgsql;

namespace ShardKit.Tests.Execution;

/// <summary>Multi-shard reads under failure, timeouts, cancellation and early stops, on real shards.</summary>
public sealed class FanOutQueryTests
{
    private const string Ddl = "create table {0} (id bigint)";

    [Test]
    public async Task A_shard_cut_mid_query_fails_a_complete_results_read_and_names_the_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        var running = db.AllShards().QueryAsync<int>("select g from generate_series(1, 3) g, pg_sleep(1.5)", null, Merge.OrderBy<int, int>(g => g));
        await Task.Delay(300);
        ctx.Proxies[1].Cut();

        var error = Assert.ThrowsAsync<ShardAggregateException>(async () => await running);
        Assert.That(error!.FailedShards, Is.EqualTo(new[] { "s1" }));
        ctx.Proxies[1].Restore();
    }

    [Test]
    public async Task A_shard_cut_mid_query_leaves_the_other_shards_rows_under_partial_results()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        var partial = db.AllShards(new FanOutOptions { Policy = FanOutPolicy.PartialResults });
        var running = partial.QueryAsync<int>("select inet_server_port() from pg_sleep(1.5)");
        await Task.Delay(300);
        ctx.Proxies[2].Cut();

        var result = await running;
        Assert.That(result.IsComplete, Is.False);
        Assert.That(result.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s2" }));
        Assert.That(result.Select(ctx.ShardOfPort), Is.EquivalentTo(new[] { "s0", "s1", "s3" }));
        ctx.Proxies[2].Restore();
    }

    [Test]
    public async Task A_cut_shard_ends_its_part_of_a_partial_stream_and_is_listed_afterwards()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        ctx.Proxies[0].Cut();
        var stream = db.AllShards(new FanOutOptions { Policy = FanOutPolicy.PartialResults })
            .QueryUnbufferedAsync<int>("select g from generate_series(1, 100) g order by g", null, Merge.OrderBy<int, int>(g => g));
        var count = 0;
        await foreach (var _ in stream)
        {
            count++;
        }

        Assert.That(count, Is.EqualTo(300));
        Assert.That(stream.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s0" }));
        Assert.That(stream.Failures[0].Error, Is.InstanceOf<ShardConnectionException>().With.InnerException.InstanceOf<NpgsqlException>());
        ctx.Proxies[0].Restore();
    }

    [Test]
    public async Task A_slow_shard_past_its_timeout_is_a_timeout_failure_of_a_partial_read()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var slowPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[3]).Port;
        // Open every shard's connection first: the bound is about the slow query, not a cold connect on a loaded machine.
        await db.AllShards().ExecuteAsync("select 1");
        var options = new FanOutOptions { PerShardTimeout = TimeSpan.FromSeconds(2), Policy = FanOutPolicy.PartialResults };

        var result = await db.AllShards(options).QueryAsync<int>(
            $"select 1 from pg_sleep(case when inet_server_port() = {slowPort} then 10 else 0 end)");

        Assert.That(result, Has.Count.EqualTo(3));
        Assert.That(result.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s3" }));
        Assert.That(result.Failures[0].Error, Is.InstanceOf<ShardTimeoutException>());
    }

    [Test]
    public async Task The_first_match_returns_at_once_and_cancels_the_shards_still_searching()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var fastPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[2]).Port;
        var marker = "first_" + Guid.NewGuid().ToString("N");

        var found = await db.AllShards().QueryFirstAsync<int>(
            $"select inet_server_port() from pg_sleep(case when inet_server_port() = {fastPort} then 0 else 30 end) /* {marker} */");

        Assert.That(found, Is.EqualTo(fastPort));
        await ctx.AssertNotRunningAsync(marker);
    }

    [Test]
    public async Task A_first_match_stops_a_query_whose_cancel_request_the_server_dropped()
    {
        // PostgreSQL drops a cancel request that reaches a backend before it has read the query (CI: on a busy machine the
        // search on s0 ran on for its 30 s after the first match, its cancel lost). The proxy holds s0's query while the
        // cancel request passes on a new connection, then lets the query in: only a second cancel stops it.
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        await db.AllShards().ExecuteAsync("select 1"); // each shard's pool holds its open connection
        var held = ctx.Proxies[0];
        var fastPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[2]).Port;
        var marker = "lost_" + Guid.NewGuid().ToString("N");
        var acceptedBefore = held.AcceptedConnections;
        var closedBefore = held.ClosedConnections;
        held.HoldOpenLinks();
        var release = Task.Run(async () =>
        {
            // Once the server has closed the cancel request's connection it has acted on it (and dropped it: the backend
            // had no query yet); then the query goes in.
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (held.ClosedConnections == closedBefore && DateTime.UtcNow < deadline)
            {
                await Task.Delay(5);
            }

            held.ReleaseHeld();
        });

        var found = await db.AllShards().QueryFirstAsync<int>(
            $"select inet_server_port() from pg_sleep(case when inet_server_port() = {fastPort} then 0 else 30 end) /* {marker} */");
        await release;

        Assert.That(found, Is.EqualTo(fastPort));
        Assert.That(held.AcceptedConnections, Is.GreaterThan(acceptedBefore), "no cancel request reached s0's proxy");
        await ctx.AssertNotRunningAsync(marker);
    }

    [TestCase("routed")]
    [TestCase("fan-out")]
    public async Task A_query_cancelled_by_the_callers_token_stops_on_the_server_when_its_cancel_request_was_dropped(string shape)
    {
        // As above, for a command cancelled by the caller's token: Npgsql's one cancel request is dropped (the proxy holds
        // s0's query until the server closed the cancel request's connection), Npgsql gives up on the connection after
        // its Cancellation Timeout (2 s here), and ShardKit cancels the query again by its backend's id (a routed command
        // in its pipeline, which fails without it; a fan-out's shards as their streams stop).
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        await db.AllShards().ExecuteAsync("select 1");
        var held = ctx.Proxies[0];
        var marker = "dropped_" + Guid.NewGuid().ToString("N");
        var sql = $"select 1 from pg_sleep(30) /* {marker} */";
        var closedBefore = held.ClosedConnections;
        held.HoldOpenLinks();
        using var cancel = new CancellationTokenSource();
        var release = Task.Run(async () =>
        {
            await Task.Delay(300); // the query is sent and held
            await cancel.CancelAsync();
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (held.ClosedConnections == closedBefore && DateTime.UtcNow < deadline)
            {
                await Task.Delay(5);
            }

            held.ReleaseHeld();
        });

        Task call = shape == "routed"
            ? db.OnShard("s0").QueryAsync<int>(new CommandDefinition(sql, cancellationToken: cancel.Token))
            : db.AllShards().QueryAsync<int>(new CommandDefinition(sql, cancellationToken: cancel.Token), Merge.Concat<int>());
        Assert.CatchAsync(async () => await call);
        await release;

        Assert.That(held.ClosedConnections, Is.GreaterThan(closedBefore), "no cancel request reached s0's proxy");
        await ctx.AssertNotRunningAsync(marker);
    }

    [Test]
    public async Task Cancelling_a_stream_stops_the_queries_on_the_servers()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = "stream_" + Guid.NewGuid().ToString("N");
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));

        Assert.That(async () =>
        {
            await foreach (var _ in db.AllShards().QueryUnbufferedAsync<int>($"select 1 from pg_sleep(30) /* {marker} */").WithCancellation(cts.Token))
            {
            }
        }, Throws.InstanceOf<OperationCanceledException>());

        await ctx.AssertNotRunningAsync(marker);
    }

    [Test]
    public async Task Stopping_a_stream_early_cancels_the_rest_of_the_shards_rows()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = "early_" + Guid.NewGuid().ToString("N");
        var sql = $"select generate_series(1, 100000000) /* {marker} */"; // in the select list: streamed, not materialized first

        await foreach (var _ in db.AllShards().QueryUnbufferedAsync<int>(sql))
        {
            break;
        }

        await ctx.AssertNotRunningAsync(marker);
        Assert.That(await db.AllShards().ExecuteScalarAsync("select count(*) from pg_class", Merge.Count()), Is.Positive,
            "the connection is usable after an early stop");
    }

    [Test]
    [NonParallelizable] // measures the process's live memory: other tests' allocations would count
    public async Task An_ordered_stream_of_a_million_rows_holds_memory_proportional_to_the_shards_not_the_rows()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var before = GC.GetTotalMemory(forceFullCollection: true);
        long peak = 0, count = 0, previous = long.MinValue;
        var perShard = 1_000_000 / ctx.Shards.Count;
        await foreach (var value in db.AllShards().QueryUnbufferedAsync<long>($"select g::bigint from generate_series(1, {perShard}) g order by g", null,
                           Merge.OrderBy<long, long>(v => v)))
        {
            Assert.That(value, Is.GreaterThanOrEqualTo(previous));
            previous = value;
            if (++count % 250_000 == 0)
            {
                peak = Math.Max(peak, GC.GetTotalMemory(forceFullCollection: true) - before);
            }
        }

        Assert.That(count, Is.EqualTo(perShard * ctx.Shards.Count));
        Assert.That(peak, Is.LessThan(64L * 1024 * 1024), $"live memory grew by {peak / 1024 / 1024} MB while streaming");
    }

    [Test]
    public async Task A_shard_failing_during_an_arrival_order_read_surfaces_as_an_aggregate_error_naming_it()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var badPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[1]).Port;
        var error = Assert.ThrowsAsync<ShardAggregateException>(() => db.AllShards().QueryAsync<int>(
            $"select 1 / (inet_server_port() - {badPort}) from pg_sleep(case when inet_server_port() = {badPort} then 0 else 1 end)"));
        Assert.That(error!.FailedShards, Is.EqualTo(new[] { "s1" }));
    }

    [Test]
    public async Task An_overall_timeout_under_partial_results_keeps_the_fast_shards_and_lists_the_slow_one()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var slowPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[3]).Port;
        var options = new FanOutOptions { OverallTimeout = TimeSpan.FromMilliseconds(600), Policy = FanOutPolicy.PartialResults };
        var result = await db.AllShards(options).QueryAsync<int>($"select 1 from pg_sleep(case when inet_server_port() = {slowPort} then 10 else 0 end)");
        Assert.That(result, Has.Count.EqualTo(3));
        Assert.That(result.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s3" }));
        Assert.That(result.Failures[0].Error, Is.InstanceOf<ShardTimeoutException>());
    }

    [Test]
    public async Task An_ordered_read_fails_on_the_first_failing_shard_without_waiting_for_a_slower_one()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var slowPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[0]).Port;
        var badPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[1]).Port;
        var marker = "slow_" + Guid.NewGuid().ToString("N");
        var error = Assert.ThrowsAsync<ShardAggregateException>(() => db.AllShards().QueryAsync<int>(
            $"select 1 / (inet_server_port() - {badPort}) as g from pg_sleep(case when inet_server_port() = {slowPort} then 30 else 0 end) /* {marker} */",
            null, Merge.OrderBy<int, int>(g => g)));
        Assert.That(error!.FailedShards, Is.EqualTo(new[] { "s1" }));
        await ctx.AssertNotRunningAsync(marker); // the slow shard was cancelled, not waited for
    }

    // Under partial results a stream hands out the rows a shard sent before its failure, also when they were read ahead
    // in a batch with the failure (a fan-out parses each shard's rows a batch ahead, 256 rows); a collected read leaves
    // out every row of the failed shard.
    [TestCase(true)]
    [TestCase(false)]
    public async Task A_shard_failing_mid_stream_keeps_the_rows_it_sent_before_under_partial_results(bool streamed)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await ctx.DirectAsync<long>("s1", $"insert into {ctx.Table} values (1) returning id");
        await using var db = ctx.Source.CreateConnection();
        var partial = db.AllShards(new FanOutOptions { Policy = FanOutPolicy.PartialResults });
        var sql = $"select g from generate_series(1, 2000) g where 1 / (case when g = 1000 and exists (select from {ctx.Table}) then 0 else 1 end) = 1";
        var rows = new List<int>();
        IReadOnlyList<ShardFailure> failures;
        if (streamed)
        {
            var stream = partial.QueryUnbufferedAsync<int>(sql);
            await foreach (var g in stream)
            {
                rows.Add(g);
            }

            failures = stream.Failures;
        }
        else
        {
            var result = await partial.QueryAsync<int>(sql);
            rows.AddRange(result);
            failures = result.Failures;
        }

        Assert.That(failures.Select(f => f.Shard), Is.EqualTo(new[] { "s1" }));
        Assert.That(failures[0].Error, Is.InstanceOf<PostgresException>().With.Property("SqlState").EqualTo("22012"));
        var others = ctx.Shards.Count - 1;
        var fromS1 = streamed ? 999 : 0;
        Assert.That(rows, Has.Count.EqualTo(2000 * others + fromS1), "every row s1 sent before its failure (streamed), and every other shard's");
        Assert.That(rows.Count(g => g < 1000), Is.EqualTo(999 * others + fromS1));
        Assert.That(rows.Count(g => g >= 1000), Is.EqualTo(1001 * others));
    }

    // Complete results: the same failure fails the read and names the shard, and the streamed read has returned no row of
    // s1 past the failure.
    [Test]
    public async Task A_shard_failing_mid_stream_fails_a_complete_read_and_names_the_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await ctx.DirectAsync<long>("s1", $"insert into {ctx.Table} values (1) returning id");
        await using var db = ctx.Source.CreateConnection();
        var sql = $"select g from generate_series(1, 2000) g where 1 / (case when g = 1000 and exists (select from {ctx.Table}) then 0 else 1 end) = 1";
        var error = Assert.ThrowsAsync<ShardAggregateException>(async () =>
        {
            await foreach (var _ in db.AllShards().QueryUnbufferedAsync<int>(sql))
            {
            }
        });
        Assert.That(error!.FailedShards, Is.EqualTo(new[] { "s1" }));
    }
}

using Npgsql;

namespace ShardKit.Tests.Execution;

public sealed class FanOutExecuteTests
{
    private const string Ddl = "create table {0} (customer_id bigint not null, id bigint not null, status text not null default 'new')";

    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
        public long Id { get; init; }
    }

    [Test]
    public async Task Broadcast_reports_affected_rows_per_shard_and_in_total()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var rows = Enumerable.Range(1, 100).Select(i => new Row { CustomerId = i, Id = i }).ToList();
        await db.ExecuteAsync($"insert into {ctx.Table} (customer_id, id) values (@CustomerId, @Id)", rows);

        var result = await db.AllShards().ExecuteAsync($"update {ctx.Table} set status = 'done' where id % 2 = 0");

        Assert.That(result.Total, Is.EqualTo(50));
        Assert.That(result.IsComplete, Is.True);
        foreach (var shard in ctx.Shards.Names)
        {
            var expected = rows.Count(r => r.Id % 2 == 0 && ctx.Source.ShardFor(r.CustomerId) == shard);
            Assert.That(result.AffectedRows[shard], Is.EqualTo(expected), shard);
        }
    }

    [Test]
    public async Task Shards_by_name_target_only_those_shards()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var result = await db.Shards("s1", "s3").ExecuteAsync($"insert into {ctx.Table} (customer_id, id) values (0, 0)");
        Assert.That(result.AffectedRows.Keys, Is.EquivalentTo(new[] { "s1", "s3" }));
        Assert.That((await ctx.DirectAsync<int>("s0", $"select count(*)::int from {ctx.Table}"))[0], Is.Zero);
        Assert.That((await ctx.DirectAsync<int>("s3", $"select count(*)::int from {ctx.Table}"))[0], Is.EqualTo(1));
    }

    [Test]
    public async Task A_shard_cut_mid_statement_fails_the_whole_broadcast_and_names_the_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        var running = db.AllShards().ExecuteAsync("select pg_sleep(1.5)");
        await Task.Delay(300);
        ctx.Proxies[1].Cut();

        var error = Assert.ThrowsAsync<BroadcastWriteException>(async () => await running);
        Assert.That(error!.FailedShards, Is.EqualTo(new[] { "s1" }));
        Assert.That(error.Message, Does.Contain("s1"));
        Assert.That(error.Failures[0].Error, Is.InstanceOf<ShardConnectionException>().With.InnerException.InstanceOf<NpgsqlException>());
        ctx.Proxies[1].Restore();
    }

    [Test]
    public async Task Partial_results_keep_the_shards_that_answered_and_list_the_cut_one()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        var partial = db.AllShards(new FanOutOptions { Policy = FanOutPolicy.PartialResults });
        var running = partial.ExecuteAsync($"insert into {ctx.Table} (customer_id, id) select 1, 1 from pg_sleep(1)");
        await Task.Delay(300);
        ctx.Proxies[2].Cut();

        var result = await running;
        Assert.That(result.IsComplete, Is.False);
        Assert.That(result.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s2" }));
        Assert.That(result.AffectedRows.Keys, Is.EquivalentTo(new[] { "s0", "s1", "s3" }));
        Assert.That(result.Total, Is.EqualTo(3));

        ctx.Proxies[2].Restore();
        var again = await partial.ExecuteAsync("select 1");
        Assert.That(again.IsComplete, Is.True, "a restored shard answers again on the same connection");
    }

    [Test]
    public async Task Partial_results_throw_when_every_shard_failed()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        foreach (var proxy in ctx.Proxies)
        {
            proxy.Cut();
        }

        var error = Assert.ThrowsAsync<BroadcastWriteException>(() =>
            db.AllShards(new FanOutOptions { Policy = FanOutPolicy.PartialResults }).ExecuteAsync("select 1"));
        Assert.That(error!.FailedShards, Is.EquivalentTo(ctx.Shards.Names));
        foreach (var proxy in ctx.Proxies)
        {
            proxy.Restore();
        }
    }

    [Test]
    public async Task Per_shard_timeout_fails_only_the_slow_shard_with_a_timeout_error()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var slowPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[3]).Port;
        // Open every shard's connection first: the bound is about the slow query, not a cold connect on a loaded machine.
        await db.AllShards().ExecuteAsync("select 1");
        var options = new FanOutOptions { PerShardTimeout = TimeSpan.FromSeconds(2), Policy = FanOutPolicy.PartialResults };

        var result = await db.AllShards(options).ExecuteAsync($"select pg_sleep(case when inet_server_port() = {slowPort} then 10 else 0 end)");

        Assert.That(result.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s3" }));
        Assert.That(result.Failures[0].Error, Is.InstanceOf<ShardTimeoutException>());
        Assert.That(result.Failures[0].Error.Message, Does.Contain("per-shard timeout of 2000 ms"));
    }

    [Test]
    public async Task Overall_timeout_with_complete_results_throws_a_timeout_error()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var error = Assert.ThrowsAsync<BroadcastWriteException>(() =>
            db.AllShards(new FanOutOptions { OverallTimeout = TimeSpan.FromMilliseconds(300) }).ExecuteAsync("select pg_sleep(10)"));
        Assert.That(error!.InnerExceptions, Has.Some.InstanceOf<ShardTimeoutException>());
    }

    [Test]
    public async Task Cancelling_the_caller_token_stops_the_queries_on_the_servers()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = "cancel_" + Guid.NewGuid().ToString("N");
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));

        Assert.That(async () => await db.AllShards().ExecuteAsync($"select pg_sleep(30) /* {marker} */", cancellationToken: cts.Token),
            Throws.InstanceOf<OperationCanceledException>());

        await ctx.AssertNotRunningAsync(marker);
    }

    [Test]
    public async Task Bounded_parallelism_still_reaches_every_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var result = await db.AllShards(new FanOutOptions { MaxParallelism = 1 }).ExecuteAsync($"insert into {ctx.Table} (customer_id, id) values (1, 1)");
        Assert.That(result.Total, Is.EqualTo(ctx.Shards.Count));
    }

    [Test]
    public async Task A_fan_out_inside_a_single_shard_transaction_is_refused()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await using var tx = await db.ForKey(1L).BeginTransactionAsync();
        Assert.ThrowsAsync<ShardRoutingException>(() => db.AllShards().ExecuteAsync("select 1"));
    }

    [Test]
    public void Invalid_fan_out_options_are_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new FanOutOptions { MaxParallelism = 0 }.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new FanOutOptions { PerShardTimeout = TimeSpan.Zero }.Validate());
    }
}

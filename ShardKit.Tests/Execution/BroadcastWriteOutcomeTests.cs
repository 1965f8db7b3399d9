using Npgsql;

namespace ShardKit.Tests.Execution;

/// <summary>
/// A write sent to several shards that fails on one must say what every shard kept: applied (with its rows), not
/// applied, or in doubt, and the report must match what the shards really hold.
/// </summary>
public sealed class BroadcastWriteOutcomeTests
{
    private const string Ddl = "create table {0} (customer_id bigint not null, id bigint not null, status text not null default 'new')";

    public sealed record Row([property: ShardKey] long CustomerId, long Id);

    [Test]
    public async Task A_broadcast_update_cut_off_on_one_shard_says_where_it_applied_and_where_it_is_in_doubt()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        var expected = await InsertRowsAsync(ctx, db);
        var slowPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[1]).Port;

        // s1 sleeps before its update; the others apply theirs at once, and s1's connection is cut once they have.
        var running = db.AllShards().ExecuteAsync(
            $"update {ctx.Table} set status = 'done' from (select pg_sleep(case when inet_server_port() = {slowPort} then 60 else 0 end)) z");
        foreach (var shard in ctx.Shards.Names.Where(s => s != "s1"))
        {
            await WaitUntilAsync(async () => await DoneOnAsync(ctx, shard) == expected[shard], $"the update applied on {shard}");
        }

        ctx.Proxies[1].Cut();
        var error = Assert.ThrowsAsync<BroadcastWriteException>(async () => await running)!;
        ctx.Proxies[1].Restore();
        // The server does not notice the lost client while it sleeps: end that session, so dropping the table does not wait.
        await ctx.DirectAsync<bool>("s1", $"select pg_terminate_backend(pid) from pg_stat_activity where query like '%pg_sleep(case%' " +
            $"and query like '%{ctx.Table}%' and pid <> pg_backend_pid()");

        Assert.That(error.FailedShards, Is.EqualTo(new[] { "s1" }));
        Assert.That(error, Is.InstanceOf<ShardAggregateException>(), "callers catching ShardAggregateException still do");
        Assert.That(error.AffectedRows, Is.EqualTo(expected.Where(e => e.Key != "s1").ToDictionary()));
        Assert.That(error.AppliedShards, Is.EqualTo(new[] { "s0", "s2", "s3" }));
        Assert.That(error.InDoubtShards, Is.EqualTo(new[] { "s1" }), "s1 was sent the update and never answered");
        Assert.That(error.NotAppliedShards, Is.Empty);
        Assert.That(error.Message, Does.Contain($"Applied on s0 ({RowsText(expected["s0"])}), s2 ({RowsText(expected["s2"])}), s3 ({RowsText(expected["s3"])})"));
        Assert.That(error.Message, Does.Contain("in doubt (sent but never answered; check them before writing again): s1."));
    }

    [Test]
    public async Task A_broadcast_update_refused_by_one_shard_reports_it_not_applied_and_matches_the_shards()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var expected = await InsertRowsAsync(ctx, db);
        var failingPort = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[1]).Port;

        // s1 fails with a server error after a pause, so the other shards have usually applied theirs by then.
        var error = Assert.ThrowsAsync<BroadcastWriteException>(() => db.AllShards().ExecuteAsync(
            $"update {ctx.Table} set status = 'done' where id > (select case when inet_server_port() = {failingPort} " +
            "then (select 1 from pg_sleep(2)) / 0 else 0 end)"))!;

        Assert.That(error.FailedShards, Is.EqualTo(new[] { "s1" }));
        Assert.That(error.Failures[0].Error, Is.InstanceOf<PostgresException>());
        Assert.That(error.NotAppliedShards, Does.Contain("s1"));
        Assert.That(error.Message, Does.Match("not applied on [^;]*s1"));
        await AssertReportMatchesShardsAsync(ctx, error, expected);
    }

    [Test]
    public async Task A_broadcast_to_an_unreachable_shard_lists_it_as_not_applied()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        var expected = await InsertRowsAsync(ctx, ctx.Source.CreateConnection());
        ctx.Proxies[2].Cut();
        await using var db = ctx.Source.CreateConnection(); // opens its shard connections now: s2's cannot open

        var error = Assert.ThrowsAsync<BroadcastWriteException>(() => db.AllShards().ExecuteAsync($"update {ctx.Table} set status = 'done'"))!;
        ctx.Proxies[2].Restore();

        Assert.That(error.FailedShards, Is.EqualTo(new[] { "s2" }));
        Assert.That(error.NotAppliedShards, Does.Contain("s2"), "the update never reached s2");
        Assert.That(error.InDoubtShards, Does.Not.Contain("s2"));
        await AssertReportMatchesShardsAsync(ctx, error, expected);
    }

    [Test]
    public async Task A_batch_whose_commit_fails_on_one_shard_lists_the_shards_that_committed()
    {
        // A deferred unique constraint is checked at COMMIT: every group runs, then s1's commit is refused.
        await using var ctx = await ShardTestContext.CreateAsync(
            "create table {0} (customer_id bigint not null, id bigint not null, unique (id) deferrable initially deferred)");
        await using var db = ctx.Source.CreateConnection();
        var items = Enumerable.Range(1, 80).Select(i => new Row(i, i)).ToList();
        var clash = items.First(i => ctx.Source.ShardFor(i.CustomerId) == "s1");
        await db.OnShard("s1").ExecuteAsync($"insert into {ctx.Table} (customer_id, id) values (0, {clash.Id})");

        var error = Assert.ThrowsAsync<BroadcastWriteException>(() =>
            db.ExecuteBatchAsync($"insert into {ctx.Table} (customer_id, id) values (@CustomerId, @Id)", items))!;

        var perShard = ctx.Shards.Names.ToDictionary(s => s, s => items.Count(i => ctx.Source.ShardFor(i.CustomerId) == s));
        Assert.That(error.FailedShards, Is.EqualTo(new[] { "s1" }));
        Assert.That(((PostgresException)error.Failures[0].Error).SqlState, Is.EqualTo("23505"));
        Assert.That(error.AffectedRows, Is.EqualTo(perShard.Where(p => p.Key != "s1").ToDictionary()));
        Assert.That(error.NotAppliedShards, Is.EqualTo(new[] { "s1" }));
        Assert.That(error.InDoubtShards, Is.Empty);
        Assert.That(error.Message, Does.Contain($"Committed on s0 ({RowsText(perShard["s0"])})"));
        Assert.That(error.Message, Does.Contain("rolled back on s1;"));
        foreach (var shard in ctx.Shards.Names)
        {
            var kept = (await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"))[0];
            Assert.That(kept, Is.EqualTo(shard == "s1" ? 1 : perShard[shard]), shard);
        }
    }

    [Test]
    public async Task A_batch_failing_before_its_commits_reports_every_shard_rolled_back()
    {
        await using var ctx = await ShardTestContext.CreateAsync(
            "create table {0} (customer_id bigint not null, id bigint primary key)");
        await using var db = ctx.Source.CreateConnection();
        var items = Enumerable.Range(1, 80).Select(i => new Row(i, i)).ToList();
        items.Add(items[0]);

        var error = Assert.ThrowsAsync<BroadcastWriteException>(() =>
            db.ExecuteBatchAsync($"insert into {ctx.Table} (customer_id, id) values (@CustomerId, @Id)", items))!;

        Assert.That(error.AffectedRows, Is.Empty);
        Assert.That(error.NotAppliedShards, Is.EqualTo(ctx.Shards.Names));
        Assert.That(error.Message, Does.Contain("Committed on none; rolled back on s0, s1, s2, s3;"));
    }

    private static async Task<Dictionary<string, int>> InsertRowsAsync(ShardTestContext ctx, ShardedConnection db)
    {
        var rows = Enumerable.Range(1, 40).Select(i => new Row(i, i)).ToList();
        await db.ExecuteBatchAsync($"insert into {ctx.Table} (customer_id, id) values (@CustomerId, @Id)", rows);
        return ctx.Shards.Names.ToDictionary(s => s, s => rows.Count(r => ctx.Source.ShardFor(r.CustomerId) == s));
    }

    // Every shard the error reports as applied holds exactly its reported rows; every shard reported as not applied holds none.
    private static async Task AssertReportMatchesShardsAsync(ShardTestContext ctx, BroadcastWriteException error, Dictionary<string, int> expected)
    {
        foreach (var shard in ctx.Shards.Names)
        {
            var done = await DoneOnAsync(ctx, shard);
            if (error.AffectedRows.TryGetValue(shard, out var reported))
            {
                Assert.That((reported, done), Is.EqualTo((expected[shard], expected[shard])), $"{shard} applied");
            }
            else if (error.NotAppliedShards.Contains(shard))
            {
                Assert.That(done, Is.Zero, $"{shard} reported as not applied");
            }
            else
            {
                Assert.That(error.InDoubtShards, Does.Contain(shard), $"{shard} is reported somewhere");
            }
        }
    }

    private static async Task<long> DoneOnAsync(ShardTestContext ctx, string shard) =>
        (await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table} where status = 'done'"))[0];

    private static string RowsText(int rows) => rows == 1 ? "1 row" : $"{rows} rows";

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, string what)
    {
        for (var i = 0; i < 600; i++)
        {
            if (await condition())
            {
                return;
            }

            await Task.Delay(100);
        }

        Assert.Fail($"timed out waiting until {what}");
    }
}

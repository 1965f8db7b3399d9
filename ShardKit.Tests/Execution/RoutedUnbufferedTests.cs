namespace ShardKit.Tests.Execution;

/// <summary>Routed <c>QueryUnbufferedAsync</c>: a stream read to its end costs no cancel request; one stopped early cancels its query.</summary>
public sealed class RoutedUnbufferedTests
{
    private const string Ddl = "create table {0} (id bigint)";

    [Test]
    public async Task A_routed_stream_read_to_its_end_sends_no_cancel_request()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, proxied: true);
        await using var db = ctx.Source.CreateConnection();
        await db.OnShard("s0").QueryUnbufferedAsync<int>("select 1").ToListAsync(); // the pooled connection, opened
        var before = ctx.Proxies[0].AcceptedConnections;

        var rows = await db.OnShard("s0").QueryUnbufferedAsync<int>("select g from generate_series(1, 1000) g").ToListAsync();
        await Task.Delay(200);

        Assert.That(rows, Is.EqualTo(Enumerable.Range(1, 1000)));
        Assert.That(ctx.Proxies[0].AcceptedConnections, Is.EqualTo(before), "a cancel request would have opened a connection");
    }

    [Test]
    public async Task A_routed_stream_stopped_early_cancels_its_query_and_leaves_the_connection_usable()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var marker = "routed_" + Guid.NewGuid().ToString("N");
        var seen = new List<long>();
        await foreach (var g in db.OnShard("s1").QueryUnbufferedAsync<long>($"select generate_series(1, 2000000000)::bigint /* {marker} */"))
        {
            seen.Add(g);
            if (seen.Count == 5)
            {
                break;
            }
        }

        Assert.That(seen, Is.EqualTo(new long[] { 1, 2, 3, 4, 5 }));
        await ctx.AssertNotRunningAsync(marker);
        Assert.That(await db.OnShard("s1").QuerySingleAsync<int>("select 42"), Is.EqualTo(42));
    }

    [Test]
    public async Task A_routed_stream_inside_a_transaction_sees_the_transactions_own_writes()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await using var tx = await db.OnShard("s2").BeginTransactionAsync();
        await db.OnShard("s2").ExecuteAsync($"insert into {ctx.Table} select g from generate_series(1, 3) g");

        var rows = await db.OnShard("s2").QueryUnbufferedAsync<long>($"select id from {ctx.Table} order by id").ToListAsync();

        Assert.That(rows, Is.EqualTo(new long[] { 1, 2, 3 }));
    }
}

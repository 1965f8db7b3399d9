using System.Collections.Concurrent;
using Npgsql;

namespace ShardKit.Tests.Execution;

/// <summary>
/// A ShardedConnection runs one operation at a time. Misuse from several tasks must be refused with ShardKit's typed
/// error before any shard connection opens, and must never leave a server session behind.
/// </summary>
public sealed class ConcurrentUseTests
{
    [Test]
    public async Task Many_tasks_on_one_connection_are_refused_with_the_rule_and_leave_no_backend_open()
    {
        var (source, shards, app) = await CreateSourceAsync();
        var errors = new ConcurrentBag<Exception>();
        var db = source.CreateConnection();
        var names = shards.Names;

        var tasks = Enumerable.Range(0, 48).Select(i => Task.Run(async () =>
        {
            for (var round = 0; round < 6; round++)
            {
                try
                {
                    await OneCallAsync(db, names, i + round);
                }
                catch (Exception e)
                {
                    errors.Add(e);
                }
            }
        }));
        await Task.WhenAll(tasks);

        await db.DisposeAsync();
        await source.DisposeAsync();
        NpgsqlConnection.ClearAllPools();

        foreach (var (shard, cs) in names.Zip(shards.ConnectionStrings))
        {
            Assert.That(await BackendsLeftAsync(cs, app), Is.Zero, $"sessions of this test still open on {shard}");
        }

        Assert.That(errors, Is.Not.Empty, "the tasks overlapped at least once");
        Assert.That(errors.Where(e => e is not ShardedConnectionBusyException).Select(e => e.GetType().Name + ": " + e.Message),
            Is.Empty, "every refusal is ShardKit's typed error");
        Assert.That(errors.First().Message, Does.Contain("one connection per concurrent operation"));
    }

    [Test]
    public async Task A_call_while_another_runs_is_refused_before_opening_a_shard_connection()
    {
        var (source, shards, app) = await CreateSourceAsync();
        await using (source)
        {
            await using var db = source.CreateConnection();
            var running = db.OnShard("s0").ExecuteAsync("select pg_sleep(1)");

            var error = Assert.ThrowsAsync<ShardedConnectionBusyException>(() => db.OnShard("s1").QueryAsync<int>("select 1"));
            Assert.That(error!.Message, Does.Contain("runs one operation at a time"));
            Assert.Throws<ShardedConnectionBusyException>(() => db.OnShard("s1").Execute("select 1"));
            Assert.ThrowsAsync<ShardedConnectionBusyException>(() => db.AllShards().ExecuteAsync("select 1"));
            Assert.ThrowsAsync<ShardedConnectionBusyException>(() => db.ExecuteBatchAsync("select 1", new[] { new Row { CustomerId = 1 } }));
            Assert.ThrowsAsync<ShardedConnectionBusyException>(() => db.OnShard("s1").BeginTransactionAsync());
            Assert.That(await BackendsLeftAsync(shards.ConnectionStrings[1], app, wait: false), Is.Zero, "nothing opened on s1");

            await running;
            Assert.That(await db.OnShard("s1").QueryAsync<int>("select 1"), Is.EqualTo(new[] { 1 }), "the next call runs");
        }
    }

    [Test]
    public async Task An_open_stream_holds_the_connection_until_it_is_disposed()
    {
        var (source, _, _) = await CreateSourceAsync();
        await using (source)
        {
            await using var db = source.CreateConnection();
            await using (var rows = db.OnShard("s0").QueryUnbufferedAsync<int>("select generate_series(1, 100)").GetAsyncEnumerator())
            {
                Assert.That(await rows.MoveNextAsync(), Is.True);
                Assert.ThrowsAsync<ShardedConnectionBusyException>(() => db.OnShard("s1").QueryAsync<int>("select 1"));
            }

            await using (var merged = db.AllShards().QueryUnbufferedAsync<int>("select generate_series(1, 100)", merge: Merge.Concat<int>())
                .GetAsyncEnumerator())
            {
                Assert.That(await merged.MoveNextAsync(), Is.True);
                Assert.ThrowsAsync<ShardedConnectionBusyException>(() => db.OnShard("s1").QueryAsync<int>("select 1"));
            }

            Assert.That(await db.OnShard("s1").QueryAsync<int>("select 1"), Is.EqualTo(new[] { 1 }), "disposed streams free the connection");
            Assert.That((await db.AllShards().ExecuteAsync("select 1")).IsComplete, Is.True);
        }
    }

    [Test]
    public async Task A_failed_call_frees_the_connection_for_the_next()
    {
        var (source, _, _) = await CreateSourceAsync();
        await using (source)
        {
            await using var db = source.CreateConnection();
            Assert.ThrowsAsync<PostgresException>(() => db.OnShard("s0").QueryAsync<int>("select 1/0"));
            Assert.ThrowsAsync<BroadcastWriteException>(() => db.AllShards().ExecuteAsync("select 1/0"));
            Assert.Throws<PostgresException>(() => db.OnShard("s0").Query<int>("select 1/0"));
            Assert.That(await db.ForKey(1L).QueryAsync<int>("select 1"), Is.EqualTo(new[] { 1 }));
        }
    }

    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
    }

    // Each kind of call a repository makes: routed, split, fan-out, streamed, synchronous.
    private static async Task OneCallAsync(ShardedConnection db, IReadOnlyList<string> names, int i)
    {
        switch (i % 5)
        {
            case 0:
                await db.ForKey(i).QueryAsync<int>("select 1");
                break;
            case 1:
                await db.AllShards().ExecuteAsync("select 1");
                break;
            case 2:
                await foreach (var _ in db.OnShard(names[i % names.Count]).QueryUnbufferedAsync<int>("select generate_series(1, 3)"))
                {
                }

                break;
            case 3:
                db.ForKey(i).Execute("select 1");
                break;
            default:
                await db.ExecuteBatchAsync("select @CustomerId", Enumerable.Range(0, 8).Select(k => new Row { CustomerId = k }));
                break;
        }
    }

    private static async Task<(ShardedDataSource Source, Harness.TestShardSet Shards, string App)> CreateSourceAsync()
    {
        var shards = await Shards.GetAsync();
        var app = "sk_" + Guid.NewGuid().ToString("N")[..16];
        var builder = new ShardedDataSourceBuilder();
        for (var i = 0; i < shards.Count; i++)
        {
            builder.AddShard(shards.Names[i], shards.ConnectionStrings[i] + $";Application Name={app}");
        }

        return (builder.Build(), shards, app);
    }

    // Server sessions that carry this test's application name; with wait, gives closing sessions up to 10 s to end.
    private static async Task<long> BackendsLeftAsync(string connectionString, string app, bool wait = true)
    {
        await using var conn = new NpgsqlConnection(connectionString);
        await conn.OpenAsync();
        long left = -1;
        for (var i = 0; i < 100 && left != 0; i++)
        {
            await using var cmd = new NpgsqlCommand("select count(*) from pg_stat_activity where application_name = @app", conn);
            cmd.Parameters.AddWithValue("app", app);
            left = (long)(await cmd.ExecuteScalarAsync())!;
            if (left != 0 && wait)
            {
                await Task.Delay(100);
            }
            else if (!wait)
            {
                break;
            }
        }

        return left;
    }
}

using Dapper;
using ShardKit.Tests.Replicas;
using static ShardKit.Tests.Resharding.StoredMapTests;

namespace ShardKit.Tests.Resharding;

// A read of a moving bucket sent to a standby is checked against the standby's copy of the fence, which lags its
// primary's. When the new owner's standby has not replayed the taking yet, it refuses with no word of where to go: the
// read then goes to the shard's primary, whose fence has the last word, instead of waiting for a map that never changes.
[TestFixture]
public sealed class StandbyReadFenceTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    private static readonly ReplicaOptions Checked = new() { MaxStandbyLag = null, RefreshInterval = TimeSpan.FromMilliseconds(100) };

    private ReplicatedShards _servers = null!;

    [OneTimeSetUp]
    public async Task StartAsync() => _servers = await ReplicatedShards.StartAsync(2, "sf", "select 1");

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        if (_servers is not null)
        {
            await _servers.DisposeAsync();
        }
    }

    // upgradeNotReplayed: the primary's fence got shardkit.check_owned (a move of this version upgraded it) after the
    // standby stopped replaying, so the standby cannot check the read at all. That is the standby's lag, not the shard's
    // lack: the read goes to the primary, and the shard is not marked as read unchecked.
    // primaryDown: the primary's breaker is open, so the read cannot go there: the caller gets ShardUnavailableException
    // (not the standby's error), and the shard is not marked either.
    [TestCase(false, false, false)]
    [TestCase(true, false, false)]
    [TestCase(false, true, false)]
    [TestCase(true, true, false)]
    [TestCase(false, true, true)]
    [TestCase(true, true, true)]
    public async Task A_read_the_new_owners_lagging_standby_refuses_runs_on_its_primary(bool stream, bool upgradeNotReplayed, bool primaryDown)
    {
        await using var shards = await ReshardingShards.CreateOnAsync(_servers.Cluster.ConnectionStrings);
        await shards.NewSource().Resharding.SeedAsync([Items]);
        await using (var catalog = await shards.OpenAsync(0))
        {
            await catalog.ExecuteAsync("insert into shardkit.move (id, buckets, source, target, state) values ('m-standby', '{1}', 's0', 's1', 'CatchingUp')");
        }

        foreach (var standby in _servers.Standbys)
        {
            await standby.CatchUpAsync(); // the test's database and its fence are on the standbys
        }

        var app = shards.NewSource(standbys: _servers.Standbys.Select(s => s.ConnectionString).ToArray(), more: b => b.UseReplicas(Checked)
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1, BreakDuration = TimeSpan.FromMinutes(10) }));
        await app.Shards.Standbys.RefreshAsync(CancellationToken.None);
        app = await StaleAppAsync(shards, app);
        var key = KeyIn(app.Map, 1);
        await using (var owner = await shards.OpenAsync(1))
        {
            await owner.ExecuteAsync("set shardkit.fence = off; insert into items (id, payload) values (@key, 'current')", new { key });
        }

        string? checkOwned = null;
        if (upgradeNotReplayed)
        {
            await using var owner = await shards.OpenAsync(1);
            checkOwned = await owner.ExecuteScalarAsync<string>("select pg_get_functiondef('shardkit.check_owned(text)'::regprocedure)");
            await owner.ExecuteAsync("drop procedure shardkit.check_owned(text)");
        }

        await _servers.Standbys[1].CatchUpAsync();
        await _servers.Standbys[1].PauseReplayAsync();
        var standbyPort = new Npgsql.NpgsqlConnectionStringBuilder(_servers.Standbys[1].ConnectionString).Port;
        var standbyFailures = new System.Collections.Concurrent.ConcurrentBag<string>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = s => s.Name == ShardKitInfo.Name,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) =>
                System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a =>
            {
                if (Equals(a.GetTagItem("db.namespace"), shards.Database) && Equals(a.GetTagItem("server.port"), standbyPort)
                    && a.Status == System.Diagnostics.ActivityStatusCode.Error)
                {
                    standbyFailures.Add(a.StatusDescription ?? "");
                }
            },
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        try
        {
            if (checkOwned is not null)
            {
                await using var owner = await shards.OpenAsync(1);
                await owner.ExecuteAsync(checkOwned); // the primary's upgrade, which the paused standby has not replayed
            }

            await SwitchByHandAsync(shards, bucket: 1, from: 0, to: 1, notify: true);
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (app.Map.ShardFor(key) != "s1" && DateTime.UtcNow < deadline)
            {
                await Task.Delay(20);
            }

            Assert.That(app.Map.ShardFor(key), Is.EqualTo("s1"), "the app follows the switch");
            await using (var standby = new Npgsql.NpgsqlConnection(new Npgsql.NpgsqlConnectionStringBuilder(_servers.Standbys[1].ConnectionString)
                             { Database = shards.Database }.ConnectionString))
            {
                await standby.OpenAsync();
                Assert.That(await standby.ExecuteScalarAsync<bool>("select owned from shardkit.bucket_owner where bucket = 1"), Is.False,
                    "the standby has not replayed the taking");
            }

            await using var db = app.CreateConnection();
            db.ReadPolicy = ReadPolicy.PreferStandby;
            const string sql = "select payload from items where id = @Id";
            Task<string?> Read() => stream
                ? FirstAsync(db.QueryUnbufferedAsync<string>(sql, new Item { Id = key }))
                : db.QueryFirstOrDefaultAsync<string>(sql, new Item { Id = key });
            if (primaryDown)
            {
                app.Shards.BreakerAt(1).OnFailure(new Npgsql.NpgsqlException("cut", new System.Net.Sockets.SocketException()));
                Assert.That(Read, Throws.InstanceOf<ShardUnavailableException>(), "the primary cannot be asked; the standby could not check");
                Assert.That(standbyFailures, Is.Not.Empty);
                Assert.That(shards.Logs.Logs.Where(l => l.EventId == 1705), Is.Empty, "the standby's lag does not mark the shard");
                return;
            }

            var payload = await Read();
            Assert.That(payload, Is.EqualTo("current"));
            Assert.That(standbyFailures, Is.Not.Empty, "the read was tried on the standby first, which could not take it");
            Assert.That(shards.Logs.Logs.Where(l => l.EventId == 1705), Is.Empty,
                "a standby's lag does not mark the shard as read unchecked (its primary has the check)");
        }
        finally
        {
            await _servers.Standbys[1].ResumeReplayAsync();
        }

        static async Task<string?> FirstAsync(IAsyncEnumerable<string> rows)
        {
            await foreach (var row in rows)
            {
                return row;
            }

            return null;
        }
    }
}

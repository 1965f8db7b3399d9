using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Npgsql;

namespace ShardKit.Tests.Replicas;

/// <summary>
/// Reads on real streaming standbys: two primaries of the fixture's own, one standby each. Each test leaves replay
/// running when it ends. Servers are told apart by <c>inet_server_port()</c>.
/// </summary>
public sealed class ReadReplicaTests
{
    /// <summary>
    /// Read-after-write pairs per run: 1,000 keeps the suite short and shows the same as the issue's 10,000
    /// (<c>SHARDKIT_REPLICA_PAIRS=10000</c> runs those).
    /// </summary>
    private static readonly int Pairs = int.TryParse(Environment.GetEnvironmentVariable("SHARDKIT_REPLICA_PAIRS"), out var pairs) && pairs > 0 ? pairs : 1000;

    private const string Port = "select inet_server_port()";
    private const string Schema = "create table items (k bigint primary key, v int not null)";

    // No time limit: a paused standby must stay eligible so that, without read-your-writes, reads do go there.
    private static readonly ReplicaOptions Checked = new() { MaxStandbyLag = null, RefreshInterval = TimeSpan.FromMilliseconds(100) };

    // The test decides when the standbys are checked (RefreshAsync); the loop's own checks come ten minutes apart.
    private static readonly ReplicaOptions CheckedByTest = Checked with { RefreshInterval = TimeSpan.FromMinutes(10) };

    private static long _nextKey = 1000;
    private ReplicatedShards _shards = null!;

    [OneTimeSetUp]
    public async Task StartAsync() => _shards = await ReplicatedShards.StartAsync(2, "rr", Schema);

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        if (_shards is not null)
        {
            await _shards.DisposeAsync();
        }
    }

    [TearDown]
    public async Task ResumeReplayAsync()
    {
        foreach (var standby in _shards.Standbys)
        {
            await standby.ResumeReplayAsync();
        }
    }

    private int PrimaryPort(int shard) => _shards.Cluster.PortOf(shard);

    private int StandbyPort(int shard) => _shards.Standbys[shard].Port;

    // Modulo placement over two shards: an even key lives on rr0, an odd one on rr1.
    private static long NextKey(int shard)
    {
        var key = Interlocked.Add(ref _nextKey, 2);
        return key % 2 == shard ? key : key + 1;
    }

    [Test]
    public async Task Reads_follow_the_policy_of_the_data_source_the_connection_and_the_call_while_writes_stay_on_the_primary()
    {
        await using var source = await _shards.BuildAsync(Checked);
        await using var db = source.CreateConnection();

        Assert.That(await db.OnShard("rr0").QuerySingleAsync<int>(Port), Is.EqualTo(PrimaryPort(0)), "Primary is the default");
        db.ReadPolicy = ReadPolicy.PreferStandby;
        Assert.That(await db.OnShard("rr0").QuerySingleAsync<int>(Port), Is.EqualTo(StandbyPort(0)));
        Assert.That(db.OnShard("rr0").QuerySingle<int>(Port), Is.EqualTo(StandbyPort(0)), "the synchronous path chooses the same way");
        Assert.That(await db.OnShard("rr0").WithReadPolicy(ReadPolicy.Primary).QuerySingleAsync<int>(Port), Is.EqualTo(PrimaryPort(0)));
        Assert.That(await db.OnShard("rr1").WithReadPolicy(ReadPolicy.Standby).ExecuteScalarAsync<int>(Port), Is.EqualTo(StandbyPort(1)));
        await foreach (var port in db.OnShard("rr1").QueryUnbufferedAsync<int>(Port))
        {
            Assert.That(port, Is.EqualTo(StandbyPort(1)), "an unbuffered stream reads from the standby too");
        }

        var key = NextKey(0);
        await db.ForKey(key).ExecuteAsync("insert into items (k, v) values (@K, inet_server_port())", new { K = key });
        var written = await db.ForKey(key).WithReadPolicy(ReadPolicy.Primary).QuerySingleAsync<int>("select v from items where k = @K", new { K = key });
        Assert.That(written, Is.EqualTo(PrimaryPort(0)), "a write under PreferStandby runs on the primary");

        await using (var transaction = await db.OnShard("rr1").BeginTransactionAsync())
        {
            Assert.That(await db.OnShard("rr1").WithReadPolicy(ReadPolicy.Standby).QuerySingleAsync<int>(Port), Is.EqualTo(PrimaryPort(1)),
                "inside a transaction every read is the transaction's, on the primary");
            await transaction.CommitAsync();
        }
    }

    [Test]
    public async Task With_replay_paused_read_your_writes_reads_no_stale_row_and_without_it_reads_are_stale()
    {
        await using var source = await _shards.BuildAsync(Checked);
        foreach (var standby in _shards.Standbys)
        {
            await standby.PauseReplayAsync();
        }

        var staleWith = await StaleReadsAsync(source, readYourWrites: true);
        var staleWithout = await StaleReadsAsync(source, readYourWrites: false);

        TestContext.Out.WriteLine($"{Pairs} read-after-write pairs under PreferStandby, replay paused: " +
                                  $"{staleWith} stale with read-your-writes, {staleWithout} stale without");
        Assert.That(staleWith, Is.Zero);
        // Every such read goes to the paused standby unless a background check happened to miss it (then the primary answers).
        Assert.That(staleWithout, Is.GreaterThan(Pairs / 2), "without it reads went to a standby that never saw the write");
    }

    private static async Task<int> StaleReadsAsync(ShardedDataSource source, bool readYourWrites)
    {
        await using var db = source.CreateConnection();
        db.ReadPolicy = ReadPolicy.PreferStandby;
        db.ReadYourWrites = readYourWrites;
        var stale = 0;
        for (var i = 0; i < Pairs; i++)
        {
            var key = NextKey(i % 2);
            await db.ForKey(key).ExecuteAsync("insert into items (k, v) values (@K, @V)", new { K = key, V = i });
            var read = await db.ForKey(key).QuerySingleOrDefaultAsync<int?>("select v from items where k = @K", new { K = key });
            stale += read == i ? 0 : 1;
        }

        return stale;
    }

    [Test]
    public async Task After_a_write_reads_stay_on_the_primary_until_the_standby_is_known_to_have_replayed_it()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest);
        await using var db = source.CreateConnection();
        db.ReadPolicy = ReadPolicy.PreferStandby;
        await _shards.Standbys[0].PauseReplayAsync();
        var key = NextKey(0);

        await db.ForKey(key).ExecuteAsync("insert into items (k, v) values (@K, 7)", new { K = key });
        Assert.That(await db.ForKey(key).QuerySingleAsync<int>(Port), Is.EqualTo(PrimaryPort(0)));
        Assert.That(await db.ForKey(key).QuerySingleAsync<int>("select v from items where k = @K", new { K = key }), Is.EqualTo(7));
        var error = Assert.ThrowsAsync<StandbyUnavailableException>(() =>
            db.ForKey(key).WithReadPolicy(ReadPolicy.Standby).QuerySingleAsync<int>(Port));
        Assert.That(error!.Message, Does.Contain("'rr0/standby-1' has not replayed this connection's last write yet"));
        Assert.That(await db.OnShard("rr1").QuerySingleAsync<int>(Port), Is.EqualTo(StandbyPort(1)), "the other shard saw no write");

        await _shards.Standbys[0].ResumeReplayAsync();
        await _shards.Standbys[0].CatchUpAsync();
        await source.Shards.Standbys.RefreshAsync(CancellationToken.None);

        Assert.That(await db.ForKey(key).QuerySingleAsync<int>(Port), Is.EqualTo(StandbyPort(0)));
        Assert.That(await db.ForKey(key).QuerySingleAsync<int>("select v from items where k = @K", new { K = key }), Is.EqualTo(7));
    }

    [Test]
    public async Task A_query_that_writes_is_refused_by_the_standby_and_runs_on_the_primary_as_a_write()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest);
        await using var db = source.CreateConnection();
        db.ReadPolicy = ReadPolicy.Standby;
        await _shards.Standbys[0].PauseReplayAsync();
        var key = NextKey(0);

        var port = await db.ForKey(key).QuerySingleAsync<int>("insert into items (k, v) values (@K, inet_server_port()) returning v", new { K = key });

        Assert.That(port, Is.EqualTo(PrimaryPort(0)));
        Assert.That(await db.ForKey(key).WithReadPolicy(ReadPolicy.PreferStandby).QuerySingleOrDefaultAsync<int?>("select v from items where k = @K", new { K = key }),
            Is.EqualTo(PrimaryPort(0)), "remembered as a write: the paused standby is not used for it");
    }

    [Test]
    public async Task A_commit_is_remembered_like_a_write()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest);
        await using var db = source.CreateConnection();
        db.ReadPolicy = ReadPolicy.PreferStandby;
        await _shards.Standbys[1].PauseReplayAsync();
        var key = NextKey(1);

        await using (var transaction = await db.OnShard("rr1").BeginTransactionAsync())
        {
            await db.ForKey(key).ExecuteAsync("insert into items (k, v) values (@K, 8)", new { K = key });
            await transaction.CommitAsync();
        }

        Assert.That(await db.ForKey(key).QuerySingleOrDefaultAsync<int?>("select v from items where k = @K", new { K = key }), Is.EqualTo(8));

        await using var synchronous = source.CreateConnection();
        synchronous.ReadPolicy = ReadPolicy.PreferStandby;
        var other = NextKey(1);
        using (var transaction = synchronous.OnShard("rr1").BeginTransaction())
        {
            synchronous.ForKey(other).Execute("insert into items (k, v) values (@K, 8)", new { K = other });
            transaction.Commit();
        }

        Assert.That(synchronous.ForKey(other).QuerySingleOrDefault<int?>("select v from items where k = @K", new { K = other }), Is.EqualTo(8),
            "the synchronous commit is remembered too");
    }

    [Test]
    public async Task A_distributed_commit_is_remembered_on_every_shard_it_wrote()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest);
        await using var db = source.CreateConnection();
        db.ReadPolicy = ReadPolicy.PreferStandby;
        foreach (var standby in _shards.Standbys)
        {
            await standby.PauseReplayAsync();
        }

        var keys = new[] { NextKey(0), NextKey(1) };
        await using (var transaction = await db.BeginDistributedTransactionAsync())
        {
            foreach (var key in keys)
            {
                await db.ForKey(key).ExecuteAsync("insert into items (k, v) values (@K, 10)", new { K = key });
            }

            Assert.That((await transaction.CommitAsync()).IsComplete, Is.True);
        }

        foreach (var key in keys)
        {
            Assert.That(await db.ForKey(key).QuerySingleOrDefaultAsync<int?>("select v from items where k = @K", new { K = key }), Is.EqualTo(10));
        }
    }

    [Test]
    public async Task A_bulk_load_is_remembered_on_every_shard_it_committed()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest);
        await using var db = source.CreateConnection();
        db.ReadPolicy = ReadPolicy.PreferStandby;
        foreach (var standby in _shards.Standbys)
        {
            await standby.PauseReplayAsync();
        }

        var items = new[] { new Item { K = NextKey(0), V = 11 }, new Item { K = NextKey(1), V = 11 } };
        await db.BulkInsertAsync("items", items);

        foreach (var item in items)
        {
            Assert.That(await db.ForKey(item.K).QuerySingleOrDefaultAsync<int?>("select v from items where k = @K", new { item.K }), Is.EqualTo(11));
        }
    }

    public sealed class Item
    {
        [ShardKey] public long K { get; init; }

        public int V { get; init; }
    }

    [Test]
    public async Task A_token_carries_the_write_position_to_another_connection()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest);
        await _shards.Standbys[1].PauseReplayAsync();
        var key = NextKey(1);
        string token;
        await using (var writer = source.CreateConnection())
        {
            await writer.ForKey(key).ExecuteAsync("insert into items (k, v) values (@K, 9)", new { K = key });
            token = writer.ReadYourWritesToken;
        }

        await using var resumed = source.CreateConnection();
        resumed.ReadPolicy = ReadPolicy.PreferStandby;
        resumed.ResumeFrom(token);
        await using var fresh = source.CreateConnection();
        fresh.ReadPolicy = ReadPolicy.PreferStandby;

        const string Read = "select v from items where k = @K";
        Assert.That(await resumed.ForKey(key).QuerySingleOrDefaultAsync<int?>(Read, new { K = key }), Is.EqualTo(9));
        Assert.That(await fresh.ForKey(key).QuerySingleOrDefaultAsync<int?>(Read, new { K = key }), Is.Null,
            "without the token the standby, which has not replayed the write, answers");
    }

    [Test]
    public async Task A_standby_too_far_behind_is_skipped_and_used_again_once_it_catches_up()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest with { MaxStandbyLagBytes = 64 * 1024 });
        await using var db = source.CreateConnection();
        await _shards.Standbys[1].PauseReplayAsync();
        await db.OnShard("rr1").ExecuteAsync("insert into items (k, v) select -k, 0 from generate_series(1, 20000) k where not exists (select from items where k < 0)");
        await source.Shards.Standbys.RefreshAsync(CancellationToken.None);
        await using var reader = source.CreateConnection(); // no writes of its own: only the lag limit decides

        Assert.That(source.Shards.ReplicasAt(1).Standbys[0].Status.LagBytes, Is.GreaterThan(64 * 1024));
        Assert.That(await reader.OnShard("rr1").WithReadPolicy(ReadPolicy.PreferStandby).QuerySingleAsync<int>(Port), Is.EqualTo(PrimaryPort(1)));
        var error = Assert.ThrowsAsync<StandbyUnavailableException>(() => reader.OnShard("rr1").WithReadPolicy(ReadPolicy.Standby).QuerySingleAsync<int>(Port));
        Assert.That(error!.Shard, Is.EqualTo("rr1"));
        Assert.That(error.Message, Does.Match("'rr1/standby-1' is [0-9]+ bytes behind \\(MaxStandbyLagBytes 65536\\)"));
        Assert.That(await reader.OnShard("rr0").WithReadPolicy(ReadPolicy.Standby).QuerySingleAsync<int>(Port), Is.EqualTo(StandbyPort(0)));

        await _shards.Standbys[1].ResumeReplayAsync();
        await _shards.Standbys[1].CatchUpAsync();
        await source.Shards.Standbys.RefreshAsync(CancellationToken.None);
        Assert.That(await reader.OnShard("rr1").WithReadPolicy(ReadPolicy.Standby).QuerySingleAsync<int>(Port), Is.EqualTo(StandbyPort(1)));
    }

    [Test]
    public async Task A_standby_whose_last_replayed_commit_is_older_than_MaxStandbyLag_is_skipped_while_it_is_behind()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest with { MaxStandbyLag = TimeSpan.FromSeconds(1) });
        await using var db = source.CreateConnection();
        db.ReadYourWrites = false; // only the time limit decides
        await db.OnShard("rr0").ExecuteAsync("insert into items (k, v) values (@K, 1)", new { K = NextKey(0) });
        await _shards.Standbys[0].CatchUpAsync(); // its last replayed commit is this one
        await _shards.Standbys[0].PauseReplayAsync();
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        var key = NextKey(0);
        await db.ForKey(key).ExecuteAsync("insert into items (k, v) values (@K, 1)", new { K = key });
        await source.Shards.Standbys.RefreshAsync(CancellationToken.None);

        var error = Assert.ThrowsAsync<StandbyUnavailableException>(() => db.OnShard("rr0").WithReadPolicy(ReadPolicy.Standby).QuerySingleAsync<int>(Port));
        Assert.That(error!.Message, Does.Match("'rr0/standby-1' is [0-9.]+ s behind \\(MaxStandbyLag 1.0 s\\)"));
    }

    [Test]
    public async Task Fan_out_reads_choose_the_server_per_shard_by_policy()
    {
        await using var source = await _shards.BuildAsync(Checked);
        await using var db = source.CreateConnection();
        var primaries = new[] { PrimaryPort(0), PrimaryPort(1) };
        var standbys = new[] { StandbyPort(0), StandbyPort(1) };

        Assert.That((await db.AllShards().QueryAsync<int>(Port)).Order(), Is.EqualTo(primaries.Order()));
        Assert.That((await db.AllShards().WithReadPolicy(ReadPolicy.Standby).QueryAsync<int>(Port)).Order(), Is.EqualTo(standbys.Order()));
        Assert.That((await db.AllShards(new FanOutOptions { ReadPolicy = ReadPolicy.PreferStandby, MaxParallelism = 1 }).QueryAsync<int>(Port)).Order(),
            Is.EqualTo(standbys.Order()), "buffered per shard when fewer slots than shards");
        Assert.That(await db.AllShards().WithReadPolicy(ReadPolicy.Standby).ExecuteScalarAsync<long>("select inet_server_port()::bigint", Merge.Sum<long>()),
            Is.EqualTo(standbys.Sum()));

        db.ReadPolicy = ReadPolicy.PreferStandby;
        var key = NextKey(0);
        await db.ForKey(key).ExecuteAsync("insert into items (k, v) values (@K, 1)", new { K = key });
        Assert.That((await db.AllShards().QueryAsync<int>(Port)).Order(), Is.EqualTo(new[] { PrimaryPort(0), StandbyPort(1) }.Order()),
            "read-your-writes per shard: only the shard just written reads its primary (until its standby is seen to replay the write)");
        var broadcast = await db.AllShards().ExecuteAsync("update items set v = v where k = -1");
        Assert.That(broadcast.AffectedRows, Has.Count.EqualTo(2), "a fan-out write runs on the primaries");
    }

    [Test]
    public async Task Spans_name_the_server_the_lag_gauge_reports_each_standby_and_health_lists_them()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest);
        await using var db = source.CreateConnection();
        var spans = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == ShardKitInfo.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a =>
            {
                if (a.GetTagItem("shardkit.shard") is "rr0")
                {
                    lock (spans)
                    {
                        spans.Add(a);
                    }
                }
            },
        };
        ActivitySource.AddActivityListener(listener);

        await db.OnShard("rr0").WithReadPolicy(ReadPolicy.Standby).QuerySingleAsync<int>(Port);
        await db.OnShard("rr0").ExecuteAsync("select 1");
        lock (spans)
        {
            Assert.That(spans.Select(s => (s.GetTagItem("shardkit.server"), s.GetTagItem("server.port"), s.GetTagItem("shardkit.standby"))), Is.EqualTo(new[]
            {
                ((object?)"standby", (object?)StandbyPort(0), (object?)"rr0/standby-1"),
                ("primary", PrimaryPort(0), null),
            }));
        }

        await _shards.Standbys[0].PauseReplayAsync();
        await db.OnShard("rr0").ExecuteAsync("insert into items (k, v) values (@K, 1)", new { K = NextKey(0) });
        await source.Shards.Standbys.RefreshAsync(CancellationToken.None);
        var lag = new Dictionary<string, long>();
        using (var meters = new MeterListener())
        {
            meters.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Name == "shardkit.standby.lag")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            };
            meters.SetMeasurementEventCallback<long>((_, value, tags, _) =>
            {
                var standby = tags.ToArray().Single(t => t.Key == "shardkit.standby").Value as string;
                if (standby?.StartsWith("rr", StringComparison.Ordinal) == true)
                {
                    lag[standby] = value;
                }
            });
            meters.Start();
            meters.RecordObservableInstruments();
        }

        Assert.That(lag.Keys.Order(), Is.EqualTo(new[] { "rr0/standby-1", "rr1/standby-1" }));
        Assert.That(lag["rr0/standby-1"], Is.GreaterThan(0), "paused behind a write");

        var health = await source.CheckHealthAsync();
        Assert.That(health.SelectMany(h => h.Standbys).Select(s => (s.Name, s.IsReachable, s.IsStandby)),
            Is.EqualTo(new[] { ("rr0/standby-1", true, true), ("rr1/standby-1", true, true) }));
        Assert.That(health[0].Standbys[0].LagBytes, Is.EqualTo(lag["rr0/standby-1"]));
        var check = await new ShardHealthCheck(source).CheckHealthAsync(new HealthCheckContext());
        Assert.That(check.Status, Is.EqualTo(HealthStatus.Healthy));
        // The check reads the lag again, and the primary's WAL moves on meanwhile (440 bytes by the gauge, 256 by the check
        // in one run): still behind, by its own figure.
        Assert.That((string)check.Data["rr0/standby-1"], Does.Match(@"^up, [0-9.]+ ms, [1-9][0-9]* bytes behind$"));
    }

    [Test]
    public async Task A_standby_that_stops_answering_is_set_aside_and_reads_fall_back_to_the_primary()
    {
        await using var source = await _shards.BuildAsync(CheckedByTest);
        await using var db = source.CreateConnection();
        db.ReadPolicy = ReadPolicy.PreferStandby;
        await using var direct = new NpgsqlConnection(_shards.Standbys[1].ConnectionString);
        await direct.OpenAsync();
        Assert.That(await db.OnShard("rr1").QuerySingleAsync<int>(Port), Is.EqualTo(StandbyPort(1)));

        // End the session's standby connection from the server side, as a restart of the standby would.
        await using (var kill = new NpgsqlCommand("select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and backend_type = 'client backend'", direct))
        {
            await kill.ExecuteNonQueryAsync();
        }

        Assert.That(await db.OnShard("rr1").QuerySingleAsync<int>(Port), Is.EqualTo(PrimaryPort(1)), "the read is retried on the primary");
        Assert.That(source.GetCircuitState("rr1"), Is.EqualTo(CircuitState.Closed), "a standby's failure is not held against the primary");

        await source.Shards.Standbys.RefreshAsync(CancellationToken.None);
        Assert.That(await db.OnShard("rr1").QuerySingleAsync<int>(Port), Is.EqualTo(StandbyPort(1)), "the next check finds it again");
    }
}

namespace ShardKit.Tests.Replicas;

/// <summary>
/// A shard whose primary stops: writes fail fast and name the shard, reads go on from its standby, and once the
/// standby is promoted writes follow it without a new data source. The tests run in order on one shard of their own.
/// </summary>
public sealed class StandbyFailoverTests
{
    private const string Port = "select inet_server_port()";
    private ReplicatedShards _shards = null!;
    private ShardedDataSource _source = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _shards = await ReplicatedShards.StartAsync(1, "fo", "create table items (k bigint primary key, v int not null)");
        _source = await _shards.BuildAsync(new ReplicaOptions { RefreshInterval = TimeSpan.FromMinutes(10) }, builder => builder
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 2, BreakDuration = TimeSpan.FromMinutes(10), ProbeInterval = TimeSpan.Zero }));
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        if (_source is not null)
        {
            await _source.DisposeAsync();
        }

        if (_shards is not null)
        {
            await _shards.DisposeAsync();
        }
    }

    [Test]
    [Order(1)]
    public async Task With_the_primary_down_writes_fail_fast_naming_the_shard_and_standby_reads_go_on()
    {
        await using var db = _source.CreateConnection();
        db.ReadPolicy = ReadPolicy.PreferStandby;
        await db.OnShard("fo0").ExecuteAsync("insert into items (k, v) values (1, 1)");
        await _shards.Standbys[0].CatchUpAsync();
        await _source.Shards.Standbys.RefreshAsync(CancellationToken.None);

        await _shards.Cluster.StopAsync(0);
        await _source.Shards.Standbys.RefreshAsync(CancellationToken.None); // finds the primary gone, the standby still there

        var first = Assert.ThrowsAsync<ShardConnectionException>(() => db.OnShard("fo0").ExecuteAsync("insert into items (k, v) values (2, 2)"));
        Assert.That(first!.Shard, Is.EqualTo("fo0"));
        Assert.That(first.Message, Does.StartWith("Shard 'fo0' could not be reached"));
        Assert.ThrowsAsync<ShardConnectionException>(() => db.OnShard("fo0").ExecuteAsync("insert into items (k, v) values (2, 2)"));
        var fast = Assert.ThrowsAsync<ShardUnavailableException>(() => db.OnShard("fo0").ExecuteAsync("insert into items (k, v) values (2, 2)"));
        Assert.That(fast!.Shard, Is.EqualTo("fo0"), "after two failures the breaker answers at once");

        Assert.That(await db.OnShard("fo0").QuerySingleAsync<int>("select v from items where k = 1"), Is.EqualTo(1),
            "the connection's own write was replayed, so the standby serves it although the primary's breaker is open");
        Assert.That(await db.OnShard("fo0").WithReadPolicy(ReadPolicy.Standby).QuerySingleAsync<int>(Port), Is.EqualTo(_shards.Standbys[0].Port));
        Assert.ThrowsAsync<ShardUnavailableException>(() => db.OnShard("fo0").WithReadPolicy(ReadPolicy.Primary).QuerySingleAsync<int>(Port));
        var health = await _source.CheckHealthAsync();
        Assert.That((health[0].IsReachable, health[0].Standbys[0].IsReachable), Is.EqualTo((false, true)));
    }

    [Test]
    [Order(2)]
    public async Task A_promoted_standby_takes_the_writes_without_a_new_data_source()
    {
        await _shards.Standbys[0].PromoteAsync();
        await _source.Shards.Standbys.RefreshAsync(CancellationToken.None);
        await using var db = _source.CreateConnection();

        await db.OnShard("fo0").ExecuteAsync("insert into items (k, v) values (3, 3)");

        Assert.That(await db.OnShard("fo0").QuerySingleAsync<int>("select v from items where k = 3"), Is.EqualTo(3));
        Assert.That(await db.OnShard("fo0").QuerySingleAsync<int>(Port), Is.EqualTo(_shards.Standbys[0].Port), "the promoted server is the shard's writer");
        var health = await _source.CheckHealthAsync();
        Assert.That(health[0].Standbys[0].IsStandby, Is.False, "health reports it promoted");
    }
}

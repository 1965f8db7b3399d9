using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace ShardKit.Tests.Replicas;

/// <summary>Standbys and replica settings in code and in configuration, checked before any server is asked.</summary>
public sealed class ReplicaConfigurationTests
{
    [Test]
    public async Task Standbys_listed_in_configuration_get_one_pool_each_named_after_their_shard()
    {
        // The keys appsettings.json's "Shards": [ { "Name", "ConnectionString", "Standbys": [ … ] } ] binds to.
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ShardKit:Shards:0:Name"] = "east",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0;Username=app",
            ["ShardKit:Shards:0:Standbys:0"] = "Host=db0-replica-a;Username=app",
            ["ShardKit:Shards:0:Standbys:1"] = "Host=db0-replica-b;Username=app",
            ["ShardKit:Shards:1:Name"] = "west",
            ["ShardKit:Shards:1:ConnectionString"] = "Host=db1;Username=app",
            ["ShardKit:Replicas:ReadPolicy"] = "PreferStandby",
            ["ShardKit:Replicas:MaxStandbyLag"] = "00:00:05",
            ["ShardKit:Replicas:MaxStandbyLagBytes"] = "1048576",
        }).Build();
        await using var provider = new ServiceCollection().AddShardKit(config.GetSection(ShardKitOptions.SectionName)).BuildServiceProvider();
        var source = provider.GetRequiredService<ShardedDataSource>();

        var east = source.Shards.ReplicasAt(0);
        Assert.That(east.Standbys.Select(s => s.Info.Name), Is.EqualTo(new[] { "east/standby-1", "east/standby-2" }));
        Assert.That(east.Standbys.Select(s => s.DataSource.ConnectionString), Has.All.Contains("replica"));
        Assert.That(source.Shards.ReplicasAt(1).Standbys, Is.Empty);
        Assert.That(source.Settings.Replicas, Is.EqualTo(new ReplicaOptions
        {
            ReadPolicy = ReadPolicy.PreferStandby, MaxStandbyLag = TimeSpan.FromSeconds(5), MaxStandbyLagBytes = 1048576,
        }));
        await using var db = source.CreateConnection();
        Assert.That(db.ReadPolicy, Is.EqualTo(ReadPolicy.PreferStandby), "a connection starts with the data source's policy");
    }

    [Test]
    public void The_builder_lists_every_bad_standby_and_replica_setting_at_once_without_passwords()
    {
        var builder = new ShardedDataSourceBuilder()
            .AddShard("s0", "Host=db0;Password=hunter2-secret", "Host=db0-replica;Password=hunter2-secret;Port=x", "Host=db0;Password=hunter2-secret")
            .AddShard("s1", "Host=db1", "")
            .UseReplicas(new ReplicaOptions { MaxStandbyLag = TimeSpan.Zero, MaxStandbyLagBytes = -1, RefreshInterval = TimeSpan.Zero });

        var error = Assert.Throws<ShardConfigurationException>(() => builder.Build());

        Assert.That(error!.Errors, Has.Count.EqualTo(6), string.Join("\n", error.Errors));
        Assert.That(error.Errors, Has.Some.StartsWith("Shard 's0': standby #1 ('s0/standby-1') has a malformed connection string"));
        Assert.That(error.Errors, Has.Some.EqualTo(
            "Shard 's0': standby #2 ('s0/standby-2') has the primary's own connection string; list the standby servers, not the primary."));
        Assert.That(error.Errors, Has.Some.EqualTo(
            "Shard 's1': standby #1 ('s1/standby-1') has no connection string; list each standby's connection string under Standbys."));
        Assert.That(error.Errors, Has.Some.StartsWith("Replicas:MaxStandbyLag is 00:00:00; use a positive time span"));
        Assert.That(error.Errors, Has.Some.StartsWith("Replicas:MaxStandbyLagBytes is -1"));
        Assert.That(error.Errors, Has.Some.StartsWith("Replicas:RefreshInterval is 00:00:00"));
        Assert.That(error.Message, Does.Not.Contain("hunter2-secret"));
    }

    [Test]
    public void Validate_on_start_reports_a_bad_standby_in_configuration()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ShardKit:Shards:0:Name"] = "a",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0",
            ["ShardKit:Shards:0:Standbys:0"] = "Username=app",
            ["ShardKit:Replicas:ReadPolicy"] = "Replica",
        }).Build();
        using var provider = new ServiceCollection().AddShardKit(config.GetSection("ShardKit")).BuildServiceProvider();
        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.That(error!.Message, Does.Contain("'Replica' is not a valid ReadPolicy; use one of Primary, PreferStandby, Standby"));
    }

    [Test]
    public void A_shard_without_standbys_under_the_Standby_policy_fails_with_a_typed_error_that_names_it()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("solo", "Host=127.0.0.1;Port=1").Build();
        using var db = source.CreateConnection();
        db.ReadPolicy = ReadPolicy.Standby;

        var error = Assert.Throws<StandbyUnavailableException>(() => db.OnShard("solo").Query<int>("select 1"));

        Assert.That(error!.Shard, Is.EqualTo("solo"));
        Assert.That(error.Message, Does.Contain("the shard has no standbys configured").And.Contain("ReadPolicy.PreferStandby"));
        Assert.That(db.OnShard("solo").WithReadPolicy(ReadPolicy.Primary), Is.Not.Null);
        Assert.Throws<ArgumentOutOfRangeException>(() => db.OnShard("solo").WithReadPolicy((ReadPolicy)7));
        Assert.Throws<ArgumentOutOfRangeException>(() => db.ReadPolicy = (ReadPolicy)7);
    }

    [Test]
    public void Bad_read_your_writes_tokens_are_refused_with_what_to_do()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("s0", "Host=db0").AddShard("s1", "Host=db1").Build();
        using var other = new ShardedDataSourceBuilder().AddShard("x9", "Host=db9").Build();
        using var db = source.CreateConnection();
        using var elsewhere = other.CreateConnection();
        elsewhere.Session.Written.Wrote(0, 0x1_6B37_48);

        Assert.That(Assert.Throws<ReadYourWritesTokenException>(() => db.ResumeFrom("hello"))!.Message,
            Does.StartWith("This is not a read-your-writes token: it does not start with 'rw1.'.").And.Contain("ReadYourWritesToken"));
        Assert.That(Assert.Throws<ReadYourWritesTokenException>(() => db.ResumeFrom("rw1.%%%"))!.Message, Does.Contain("damaged"));
        Assert.That(Assert.Throws<ReadYourWritesTokenException>(() => db.ResumeFrom("rw1.czA9eno"))!.Message,
            Does.Contain("an entry is not shard=position"));
        Assert.That(Assert.Throws<ReadYourWritesTokenException>(() => db.ResumeFrom(elsewhere.ReadYourWritesToken))!.Message,
            Does.Contain("names shard 'x9', which this data source does not have (its shards: s0, s1)"));
        Assert.That(db.Session.Written[0], Is.Zero, "a refused token changes nothing");

        db.ResumeFrom(null);
        db.ResumeFrom("");
        Assert.That(db.ReadYourWritesToken, Is.EqualTo("rw1."), "no writes yet: an empty token");
    }

    [Test]
    public void A_token_carries_each_shards_position_and_positions_only_grow()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("s0", "Host=db0").AddShard("s1", "Host=db1").Build();
        using var writer = source.CreateConnection();
        using var reader = source.CreateConnection();
        writer.Session.Written.Wrote(1, 0x3000060);
        reader.Session.Written.Wrote(0, 0x5);
        reader.Session.Written.Wrote(1, 0x4000000);

        reader.ResumeFrom(writer.ReadYourWritesToken);

        Assert.That(writer.ReadYourWritesToken, Does.Match("^rw1\\.[A-Za-z0-9_-]+$"), "URL- and cookie-safe");
        Assert.That(reader.Session.Written[0], Is.EqualTo(0x5UL));
        Assert.That(reader.Session.Written[1], Is.EqualTo(0x4000000UL), "an older position changes nothing");
        using var third = source.CreateConnection();
        third.ResumeFrom(reader.ReadYourWritesToken);
        Assert.That(third.Session.Written[1], Is.EqualTo(0x4000000UL));
    }

    [Test]
    public void Each_reason_a_standby_is_skipped_is_named()
    {
        var standby = new StandbyServer(new StandbyInfo(0, "s0/standby-1", "Host=db0-replica"), null!);
        var limits = new ReplicaOptions { MaxStandbyLag = TimeSpan.FromSeconds(2), MaxStandbyLagBytes = 100 };
        string? Reject(StandbyStatus status, ulong written = 0)
        {
            standby.Status = status;
            return standby.Reject(limits, written);
        }

        Assert.That(Reject(StandbyStatus.Unknown), Is.EqualTo("'s0/standby-1' is unreachable (not checked yet)"));
        Assert.That(Reject(new(true, false, 10, 0, TimeSpan.Zero)), Is.EqualTo("'s0/standby-1' is no longer a standby (promoted)"));
        Assert.That(Reject(new(true, true, 10, 101, TimeSpan.Zero)), Is.EqualTo("'s0/standby-1' is 101 bytes behind (MaxStandbyLagBytes 100)"));
        Assert.That(Reject(new(true, true, 10, 50, null)), Does.Contain("has replayed no commit since it started, so how far is unknown"));
        Assert.That(Reject(new(true, true, 10, 50, TimeSpan.FromSeconds(2.5))), Is.EqualTo("'s0/standby-1' is 2.5 s behind (MaxStandbyLag 2.0 s)"));
        Assert.That(Reject(new(true, true, 10, 50, TimeSpan.FromSeconds(1)), written: 11), Is.EqualTo("'s0/standby-1' has not replayed this connection's last write yet"));
        Assert.That(Reject(new(true, true, 10, 50, TimeSpan.FromSeconds(1)), written: 10), Is.Null);
        Assert.That(Reject(new(true, true, 10, 0, null)), Is.Null, "caught up: an unknown time is no lag");
    }
}

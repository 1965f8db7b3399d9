using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace ShardKit.Tests.Configuration;

public sealed class ShardKitOptionsTests
{
    private static IConfiguration Config(Dictionary<string, string?> values) =>
        new ConfigurationBuilder().AddInMemoryCollection(values).Build();

    [Test]
    public void Options_bind_from_a_ShardKit_section_and_build_the_same_map()
    {
        var config = Config(new()
        {
            ["ShardKit:Shards:0:Name"] = "east",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0;Username=app",
            ["ShardKit:Shards:1:Name"] = "west",
            ["ShardKit:Shards:1:ConnectionString"] = "Host=db1;Username=app",
            ["ShardKit:Strategy"] = "Range",
            ["ShardKit:Ranges:0:To"] = "1000",
            ["ShardKit:Ranges:0:Shard"] = "east",
            ["ShardKit:Ranges:1:From"] = "1000",
            ["ShardKit:Ranges:1:Shard"] = "west",
        });
        using var provider = new ServiceCollection().AddShardKit(config.GetSection(ShardKitOptions.SectionName)).BuildServiceProvider();
        var source = provider.GetRequiredService<ShardedDataSource>();
        Assert.That(source.ShardNames, Is.EqualTo(new[] { "east", "west" }));
        Assert.That(source.ShardFor(999L), Is.EqualTo("east"));
        Assert.That(source.ShardFor(1000L), Is.EqualTo("west"));
    }

    [Test]
    public void Validate_on_start_rejects_a_bad_shard_list_with_every_error()
    {
        var config = Config(new()
        {
            ["ShardKit:Shards:0:Name"] = "a",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0;Password=hunter2-secret;Port=x",
            ["ShardKit:Shards:1:Name"] = "a",
            ["ShardKit:Shards:1:ConnectionString"] = "Host=db1",
            ["ShardKit:Buckets"] = "0",
        });
        using var provider = new ServiceCollection().AddShardKit(config.GetSection("ShardKit")).BuildServiceProvider();
        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.That(error!.Failures.Count(), Is.EqualTo(3));
        Assert.That(error.Message, Does.Not.Contain("hunter2-secret"));
    }

    [Test]
    public void List_keys_written_as_text_are_parsed_by_the_key_type()
    {
        var options = new ShardKitOptions { Strategy = ShardingStrategyKind.List, KeyType = ShardKeyKind.Guid };
        options.Shards.Add(new ShardOptions { Name = "a", ConnectionString = "Host=db" });
        options.List["not-a-guid"] = "a";
        var result = new ShardKitOptionsValidator().Validate(null, options);
        Assert.That(result.Failed, Is.True);
        Assert.That(result.FailureMessage, Does.Contain("'not-a-guid' is not a valid Guid key"));
    }

    [Test]
    public void Custom_strategy_cannot_come_from_configuration_alone()
    {
        var options = new ShardKitOptions { Strategy = ShardingStrategyKind.Custom };
        options.Shards.Add(new ShardOptions { Name = "a", ConnectionString = "Host=db" });
        var error = Assert.Throws<ShardConfigurationException>(() => ShardedDataSource.Create(options));
        Assert.That(error!.Message, Does.Contain("UseCustomSharding"));
    }
}

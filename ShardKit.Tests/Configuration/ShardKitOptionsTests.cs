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

    [Test]
    public void Binding_retry_and_breaker_settings_changes_this_options_object_only_never_the_shared_defaults()
    {
        var bound = new ShardKitOptions();
        Config(new()
        {
            ["Retries:RetryWrites"] = "true",
            ["Retries:MaxRetries"] = "7",
            ["CircuitBreaker:FailureThreshold"] = "1",
        }).Bind(bound);

        Assert.That((bound.Retries.RetryWrites, bound.Retries.MaxRetries, bound.CircuitBreaker.FailureThreshold), Is.EqualTo((true, 7, 1)));
        // The binder sets properties in place: the shared defaults every other data source starts from must be untouched.
        Assert.That((ShardRetryOptions.Default.RetryWrites, ShardRetryOptions.Default.MaxRetries), Is.EqualTo((false, 2)));
        Assert.That(CircuitBreakerOptions.Default.FailureThreshold, Is.EqualTo(5));
        Assert.That(new ShardKitOptions().Retries.RetryWrites, Is.False);
    }

    private static OptionsValidationException StartupError(Dictionary<string, string?> values)
    {
        using var provider = new ServiceCollection().AddShardKit(Config(values).GetSection("ShardKit")).BuildServiceProvider();
        return Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate())!;
    }

    [Test]
    public void A_misspelled_key_is_one_error_that_names_the_nearest_setting()
    {
        var error = StartupError(new()
        {
            ["ShardKit:Shards:0:Name"] = "a",
            ["ShardKit:Shards:0:ConnectionStirng"] = "Host=db0",
        });
        Assert.That(error.Failures, Is.EqualTo(new[]
        {
            "ShardKit:Shards:0:ConnectionStirng: 'ConnectionStirng' is not a ShardKit setting; did you mean 'ConnectionString'?",
        }));
    }

    [Test]
    public void An_unknown_key_far_from_any_setting_lists_the_settings_there()
    {
        var error = StartupError(new()
        {
            ["ShardKit:Shards:0:Name"] = "a",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0",
            ["ShardKit:CircuitBreaker:Whatever"] = "1",
        });
        Assert.That(error.Failures.Single(), Does.Contain("the settings here are BreakDuration, FailureThreshold"));
    }

    [Test]
    public void An_unknown_strategy_lists_the_valid_ones()
    {
        var error = StartupError(new()
        {
            ["ShardKit:Shards:0:Name"] = "a",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0",
            ["ShardKit:Strategy"] = "Hashing",
        });
        Assert.That(error.Failures, Is.EqualTo(new[]
        {
            "ShardKit:Strategy: 'Hashing' is not a valid ShardingStrategyKind; use one of Hash, Modulo, Range, List, Custom.",
        }));
    }

    [Test]
    public void Values_the_binder_cannot_convert_are_named_with_their_path()
    {
        var error = StartupError(new()
        {
            ["ShardKit:Shards:0:Name"] = "a",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0",
            ["ShardKit:Buckets"] = "lots",
            ["ShardKit:CircuitBreaker:BreakDuration"] = "30s",
            ["ShardKit:Retries:RetryWrites"] = "yes",
        });
        Assert.That(error.Failures.Count(), Is.EqualTo(3));
        Assert.That(error.Message, Does.Contain("ShardKit:Buckets: 'lots' is not a whole number"));
        Assert.That(error.Message, Does.Contain("ShardKit:CircuitBreaker:BreakDuration: '30s' is not a time span"));
        Assert.That(error.Message, Does.Contain("ShardKit:Retries:RetryWrites: 'yes' is not true or false"));
    }

    [Test]
    public void Every_documented_setting_binds_without_error()
    {
        var config = Config(new()
        {
            ["ShardKit:Shards:0:Name"] = "a",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0",
            ["ShardKit:Shards:1:Name"] = "b",
            ["ShardKit:Shards:1:ConnectionString"] = "Host=db1",
            ["ShardKit:strategy"] = "list",
            ["ShardKit:KeyType"] = "String",
            ["ShardKit:Buckets"] = "64",
            ["ShardKit:List:acme"] = "a",
            ["ShardKit:DefaultShard"] = "b",
            ["ShardKit:Retries:MaxRetries"] = "3",
            ["ShardKit:Retries:BaseDelay"] = "00:00:00.100",
            ["ShardKit:Retries:MaxDelay"] = "00:00:02",
            ["ShardKit:Retries:RetryWrites"] = "true",
            ["ShardKit:CircuitBreaker:FailureThreshold"] = "3",
            ["ShardKit:CircuitBreaker:BreakDuration"] = "00:00:10",
            ["ShardKit:DistributedTransactions:CoordinatorShard"] = "b",
            ["ShardKit:DistributedTransactions:AbortPreparedAfter"] = "00:02:00",
            ["ShardKit:DistributedTransactions:AbortDecisionRetention"] = "2.00:00:00",
        });
        using var provider = new ServiceCollection().AddShardKit(config.GetSection("ShardKit")).BuildServiceProvider();
        Assert.That(() => provider.GetRequiredService<IStartupValidator>().Validate(), Throws.Nothing);
        var options = provider.GetRequiredService<IOptions<ShardKitOptions>>().Value;
        Assert.That(options.Retries.RetryWrites, Is.True);
        Assert.That(options.CircuitBreaker.BreakDuration, Is.EqualTo(TimeSpan.FromSeconds(10)));
        Assert.That(provider.GetRequiredService<ShardedDataSource>().ShardFor("acme"), Is.EqualTo("a"));
    }

    [Test]
    public void A_malformed_connection_string_on_a_range_shard_is_one_error()
    {
        var error = StartupError(new()
        {
            ["ShardKit:Shards:0:Name"] = "east",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0;Port=x",
            ["ShardKit:Shards:1:Name"] = "west",
            ["ShardKit:Shards:1:ConnectionString"] = "Host=db1",
            ["ShardKit:Strategy"] = "Range",
            ["ShardKit:Ranges:0:To"] = "1000",
            ["ShardKit:Ranges:0:Shard"] = "east",
            ["ShardKit:Ranges:1:From"] = "1000",
            ["ShardKit:Ranges:1:Shard"] = "west",
        });
        Assert.That(error.Failures.Count(), Is.EqualTo(1), error.Message);
        Assert.That(error.Message, Does.Contain("Shard 'east' has a malformed connection string"));
    }
}

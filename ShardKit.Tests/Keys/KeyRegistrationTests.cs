using System.Reflection;
using System.Reflection.Emit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ShardKit.Tests.Execution;

namespace ShardKit.Tests.Keys;

/// <summary>
/// Entities registered up front (one type, an assembly, or by name in options) make their key names route scalar and
/// DTO reads from the first call; key names that registered types declare with different kinds are refused.
/// </summary>
public sealed class KeyRegistrationTests
{
    private const string Count = "select count(*) from {0} where customer_id = @CustomerId";

    public sealed class CountQuery
    {
        public long CustomerId { get; init; }
    }

    public sealed class TenantNumber
    {
        [ShardKey] public long Tenant { get; init; }
    }

    public sealed class TenantName
    {
        [ShardKey] public string Tenant { get; init; } = "";
    }

    public sealed class TenantSmall
    {
        [ShardKey] public int Tenant { get; init; }
    }

    [Test]
    public async Task A_scalar_read_keyed_by_name_is_refused_while_no_entity_declares_the_name()
    {
        await using var ctx = await ShardTestContext.CreateAsync(MultiMapTests.Ddl, stem: "reg");
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.ExecuteScalarAsync<long>(string.Format(Count, ctx.Table), new { CustomerId = 42L }));
        Assert.That(error!.Message, Does.Contain("AddEntity<T>()"));
    }

    [Test]
    public async Task A_registered_entity_routes_scalar_and_DTO_reads_by_its_key_name()
    {
        await using var ctx = await ShardTestContext.CreateAsync(MultiMapTests.Ddl, b => b.AddEntity<MultiMapTests.Order>(), stem: "reg");
        await MultiMapTests.SeedAsync(ctx);
        await using var db = ctx.Source.CreateConnection();
        var sql = string.Format(Count, ctx.Table);

        Assert.That(await db.ExecuteScalarAsync<long>(sql, new { CustomerId = 42L }), Is.EqualTo(3), "the key's shard only, no decoy");
        Assert.That(await db.ExecuteScalarAsync<long>(sql, new CountQuery { CustomerId = 42L }), Is.EqualTo(3));
        Assert.That(db.ExecuteScalar<long>(sql, new CountQuery { CustomerId = 42L }), Is.EqualTo(3));
        Assert.That(await db.QuerySingleAsync<long>(sql, new { CustomerId = 7L }), Is.EqualTo(3));
    }

    [Test]
    public async Task An_assembly_registers_every_keyed_type_it_declares()
    {
        var entities = EmitEntityAssembly("AccountNo");
        await using var ctx = await ShardTestContext.CreateAsync(MultiMapTests.Ddl, b => b.AddEntitiesFromAssembly(entities), stem: "reg");
        await using var db = ctx.Source.CreateConnection();

        foreach (var account in new[] { 1L, 2L, 42L, 1000L })
        {
            var port = await db.ExecuteScalarAsync<int>("select inet_server_port() where @AccountNo::bigint > 0", new { AccountNo = account });
            Assert.That(ctx.ShardOfPort(port), Is.EqualTo(ctx.Source.ShardFor(account)), $"account {account}");
        }
    }

    [Test]
    public void An_assembly_without_keyed_types_is_refused_by_name()
    {
        var error = Assert.Throws<ShardConfigurationException>(() =>
            new ShardedDataSourceBuilder().AddEntitiesFromAssembly(typeof(ShardedDataSourceBuilder).Assembly));
        Assert.That(error!.Message, Does.Contain("ShardKit has no type with a [ShardKey]"));
        Assert.Throws<ArgumentNullException>(() => new ShardedDataSourceBuilder().AddEntitiesFromAssembly(null!));
    }

    [Test]
    public void One_key_name_registered_with_keys_of_different_kinds_is_a_configuration_error()
    {
        var builder = new ShardedDataSourceBuilder()
            .AddShard("a", "Host=db0")
            .AddEntity<TenantNumber>()
            .AddEntity<TenantName>();

        var error = Assert.Throws<ShardConfigurationException>(() => builder.Build());
        Assert.That(error!.Errors, Has.Count.EqualTo(1));
        Assert.That(error.Message, Does.Contain("TenantNumber.Tenant is Integer and TenantName.Tenant is String")
            .And.Contain("ForKey(key)"));

        // Reported together with the map's own errors.
        var both = Assert.Throws<ShardConfigurationException>(() => new ShardedDataSourceBuilder()
            .AddEntity<TenantNumber>().AddEntity<TenantName>().Build());
        Assert.That(both!.Errors, Has.Count.GreaterThan(1));
        Assert.That(both.Errors.Last(), Does.Contain("TenantName.Tenant is String"));
    }

    [Test]
    public void Integer_keys_of_different_widths_share_a_name_without_ambiguity()
    {
        using var source = new ShardedDataSourceBuilder()
            .AddShard("a", "Host=db0").AddShard("b", "Host=db1")
            .AddEntity<TenantNumber>().AddEntity<TenantSmall>().AddEntity<TenantNumber>()
            .Build();
        Assert.That(source.KeyNames.Keys.Select(k => k.Name), Is.EqualTo(new[] { "Tenant" }));
    }

    [Test]
    public async Task Options_register_entities_by_type_name_for_AddShardKit()
    {
        var shards = await Shards.GetAsync();
        await using var ctx = await ShardTestContext.CreateAsync(MultiMapTests.Ddl, stem: "reg");
        var values = new Dictionary<string, string?>
        {
            ["ShardKit:EntityTypes:0"] = "ShardKit.Tests.Execution.MultiMapTests+Order, ShardKit.Tests",
        };
        for (var i = 0; i < shards.Count; i++)
        {
            values[$"ShardKit:Shards:{i}:Name"] = shards.Names[i];
            values[$"ShardKit:Shards:{i}:ConnectionString"] = shards.ConnectionStrings[i];
        }

        var config = new ConfigurationBuilder().AddInMemoryCollection(values).Build();
        await using var provider = new ServiceCollection().AddShardKit(config.GetSection("ShardKit")).BuildServiceProvider();
        var source = provider.GetRequiredService<ShardedDataSource>();
        await using var db = source.CreateConnection();

        var port = await db.ExecuteScalarAsync<int>("select inet_server_port() where @CustomerId::bigint > 0", new { CustomerId = 42L });
        Assert.That(ctx.ShardOfPort(port), Is.EqualTo(source.ShardFor(42L)));
    }

    [Test]
    public void Options_naming_unknown_entities_or_ambiguous_keys_fail_validation_with_each_error()
    {
        var options = new ShardKitOptions();
        options.Shards.Add(new ShardOptions { Name = "a", ConnectionString = "Host=db0" });
        options.EntityTypes.Add("MyApp.Nope, MyApp");
        options.EntityTypes.Add(typeof(TenantNumber).AssemblyQualifiedName!);
        options.EntityTypes.Add(typeof(TenantName).AssemblyQualifiedName!);
        options.EntityTypes.Add(typeof(CountQuery).AssemblyQualifiedName!);
        options.EntityAssemblies.Add("No.Such.Assembly");

        var result = new ShardKitOptionsValidator().Validate(null, options);
        Assert.That(result.Failed, Is.True);
        Assert.That(result.Failures!.Count(), Is.EqualTo(4));
        Assert.That(result.FailureMessage, Does.Contain("EntityTypes:0: 'MyApp.Nope, MyApp' is not a type that can be loaded")
            .And.Contain("EntityTypes:3: CountQuery has no [ShardKey]")
            .And.Contain("EntityAssemblies:0: 'No.Such.Assembly' is not an assembly that can be loaded")
            .And.Contain("TenantNumber.Tenant is Integer and TenantName.Tenant is String"));

        var error = Assert.Throws<ShardConfigurationException>(() => ShardedDataSource.Create(options));
        Assert.That(error!.Errors, Is.EqualTo(result.Failures));
    }

    [Test]
    public void A_misspelled_entity_setting_is_reported_by_AddShardKit()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ShardKit:Shards:0:Name"] = "a",
            ["ShardKit:Shards:0:ConnectionString"] = "Host=db0",
            ["ShardKit:EntityType:0"] = "MyApp.Order, MyApp",
        }).Build();
        using var provider = new ServiceCollection().AddShardKit(config.GetSection("ShardKit")).BuildServiceProvider();

        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.That(error!.Failures.Single(), Does.Contain("did you mean 'EntityTypes'?"));
    }

    // An assembly of its own with one keyed type: the test assembly itself declares keys of many kinds under one name.
    private static Assembly EmitEntityAssembly(string keyName)
    {
        var assembly = AssemblyBuilder.DefineDynamicAssembly(new AssemblyName($"ShardKitEntities{Guid.NewGuid():N}"), AssemblyBuilderAccess.Run);
        var type = assembly.DefineDynamicModule("Entities").DefineType("Account", TypeAttributes.Public | TypeAttributes.Sealed);
        var field = type.DefineField(keyName, typeof(long), FieldAttributes.Public);
        field.SetCustomAttribute(new CustomAttributeBuilder(typeof(ShardKeyAttribute).GetConstructor(Type.EmptyTypes)!, []));
        type.DefineDefaultConstructor(MethodAttributes.Public);
        return type.CreateType().Assembly;
    }
}

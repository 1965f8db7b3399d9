namespace ShardKit.Tests.Keys;

public sealed class ShardKeyMemberTests
{
    private sealed class Order
    {
        [ShardKey] public long CustomerId { get; init; }
        public long Id { get; init; }
    }

    private sealed class Tenant
    {
        [ShardKey("tenant_code")] public string? Code { get; init; }
    }

    private sealed class TwoKeys
    {
        [ShardKey] public long CustomerId { get; init; }
        [ShardKey] public long TenantId { get; init; }
    }

    private sealed class BadKeyType
    {
        [ShardKey] public double Score { get; init; }
    }

    [Test]
    public void Key_is_read_from_a_typed_entity()
    {
        Assert.That(ShardKeyAccessor<Order>.Read(new Order { CustomerId = 7 }), Is.EqualTo((ShardKeyValue)7L));
        Assert.That(ShardKeyMember.For(typeof(Order))!.Column, Is.EqualTo("customer_id"));
    }

    [Test]
    public void Key_column_can_be_named_by_the_attribute()
    {
        Assert.That(ShardKeyMember.For(typeof(Tenant))!.Column, Is.EqualTo("tenant_code"));
    }

    [Test]
    public void Null_key_throws_and_names_the_member()
    {
        var error = Assert.Throws<ShardRoutingException>(() => ShardKeyAccessor<Tenant>.Read(new Tenant()));
        Assert.That(error!.Message, Does.Contain("Tenant.Code").And.Contain("null"));
    }

    [Test]
    public void Two_shard_keys_on_one_type_throw_and_name_both()
    {
        var error = Assert.Throws<ShardConfigurationException>(() => ShardKeyAccessor<TwoKeys>.Read(new TwoKeys()));
        Assert.That(error!.Message, Does.Contain("CustomerId").And.Contain("TenantId").And.Contain("exactly one"));
    }

    [Test]
    public void Unsupported_key_type_on_an_entity_throws_and_names_the_member()
    {
        var error = Assert.Throws<ShardConfigurationException>(() => ShardKeyAccessor<BadKeyType>.Read(new BadKeyType()));
        Assert.That(error!.Message, Does.Contain("BadKeyType.Score").And.Contain("Double"));
    }

    [Test]
    public void Type_without_a_key_throws_and_names_the_explicit_scopes()
    {
        var error = Assert.Throws<ShardRoutingException>(() => ShardKeyAccessor<string>.Read("x"));
        Assert.That(error!.Message, Does.Contain("ForKey").And.Contain("OnShard").And.Contain("AllShards"));
    }

    [TestCase("CustomerId", "customer_id")]
    [TestCase("Id", "id")]
    [TestCase("HTTPServerName", "http_server_name")]
    [TestCase("Version2Id", "version2_id")]
    public void Member_names_become_snake_case_columns(string member, string column)
    {
        Assert.That(SnakeCase.From(member), Is.EqualTo(column));
    }
}

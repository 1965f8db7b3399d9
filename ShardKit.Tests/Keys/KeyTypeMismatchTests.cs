using Dapper;

namespace ShardKit.Tests.Keys;

public sealed class KeyTypeMismatchTests
{
    private const string Ddl = "create table {0} (customer_id bigint not null, id bigint not null)";

    public sealed class Received
    {
        [ShardKey] public long CustomerId { get; init; }
        public int Port { get; init; }
    }

    public sealed class Tenant
    {
        [ShardKey] public Guid TenantId { get; init; }
        public int Port { get; init; }
    }

    private const string WhereAmI = "select @CustomerId::bigint as customer_id, inet_server_port() as port";

    [Test]
    public async Task A_narrower_integer_key_is_placed_like_the_declared_long_key()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        for (var i = 1; i <= 16; i++)
        {
            var asInt = await db.QuerySingleAsync<Received>(WhereAmI, new { CustomerId = i });
            var asShort = await db.QuerySingleAsync<Received>(WhereAmI, new Dictionary<string, object> { ["CustomerId"] = (short)i });
            Assert.That(ctx.ShardOfPort(asInt.Port), Is.EqualTo(ctx.Source.ShardFor((long)i)), $"int {i}");
            Assert.That(ctx.ShardOfPort(asShort.Port), Is.EqualTo(ctx.Source.ShardFor((long)i)), $"short {i}");
        }
    }

    [Test]
    public async Task A_string_for_a_long_key_is_refused_naming_the_member_and_both_types_in_every_parameter_shape()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var dynamic = new DynamicParameters();
        dynamic.Add("CustomerId", "6");
        object[] shapes =
        [
            new { CustomerId = "6" },
            new { CustomerId = (object)"6" },
            new Dictionary<string, object> { ["CustomerId"] = "6" },
            dynamic,
            new { CustomerId = new[] { "6", "7" } },
        ];
        foreach (var parameters in shapes)
        {
            var error = Assert.ThrowsAsync<ShardRoutingException>(() => db.QueryAsync<Received>(WhereAmI, parameters), parameters.GetType().Name);
            Assert.That(error!.Message, Does.Contain("CustomerId").And.Contain("Int64").And.Contain("String").And.Not.Contain("'6'"));
        }
    }

    [Test]
    public async Task A_mistyped_key_in_an_untyped_write_is_refused_before_any_shard_is_written()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        await db.QueryAsync<Received>(WhereAmI, new { CustomerId = 1L }); // makes the key name known
        Assert.ThrowsAsync<ShardRoutingException>(() => db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId::bigint, 1)", new { CustomerId = "6" }));
        Assert.ThrowsAsync<ShardRoutingException>(() => db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId::bigint, 1)",
            new Dictionary<string, object> { ["CustomerId"] = "6" }));
        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That((await ctx.DirectAsync<int>(shard, $"select count(*)::int from {ctx.Table}"))[0], Is.Zero, shard);
        }
    }

    [Test]
    public async Task A_string_for_a_guid_key_is_refused()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var error = Assert.ThrowsAsync<ShardRoutingException>(() =>
            db.QueryAsync<Tenant>("select @TenantId::uuid as tenant_id, 0 as port", new { TenantId = Guid.NewGuid().ToString() }));
        Assert.That(error!.Message, Does.Contain("Tenant.TenantId").And.Contain("Guid").And.Contain("String"));
    }

    private sealed class TextCode
    {
        [ShardKey] public string? Code { get; init; }
    }

    private sealed class NumberCode
    {
        [ShardKey] public int Code { get; init; }
    }

    [Test]
    public void A_key_name_two_entities_declare_with_different_types_accepts_either_and_refuses_others()
    {
        var names = new ShardKeyNames();
        names.Remember(ShardKeyMember.For(typeof(TextCode)));
        names.Remember(ShardKeyMember.For(typeof(NumberCode)));
        names.Remember(ShardKeyMember.For(typeof(NumberCode)));

        var expected = names.Keys.Single();
        Assert.That(expected.Check("a", "Code", typeof(string)), Is.EqualTo((ShardKeyValue)"a"));
        Assert.That(expected.Check(5L, "Code", typeof(long)), Is.EqualTo((ShardKeyValue)5L));
        var error = Assert.Throws<ShardRoutingException>(() => expected.Check(Guid.Empty, "Code", typeof(Guid)));
        Assert.That(error!.Message, Does.Contain("TextCode.Code is String and NumberCode.Code is Int32").And.Contain("Pass it as String or Int32"));
    }
}

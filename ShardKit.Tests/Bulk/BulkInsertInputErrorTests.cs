namespace ShardKit.Tests.Bulk;

/// <summary>
/// Bad input fails the whole load with the row's position and the property at fault, after many good rows already
/// streamed to the shards; counting every shard directly then shows that none kept a partial load.
/// </summary>
public sealed class BulkInsertInputErrorTests
{
    private static readonly BulkInsertOptions SmallBatches = new() { BatchSize = 100 };

    public sealed class Tenanted
    {
        [ShardKey] public string? Tenant { get; init; }

        public long Id { get; init; }
    }

    public sealed class GuidKeyed
    {
        [ShardKey] public Guid? Tenant { get; init; }

        public long Id { get; init; }
    }

    public sealed class WithNickname
    {
        [ShardKey] public long CustomerId { get; init; }

        public long Id { get; init; }

        public string Nickname { get; init; } = "";
    }

    public sealed class Counted
    {
        [ShardKey] public long CustomerId { get; init; }

        public long Id { get; init; }

        public string Quantity { get; init; } = "";
    }

    public sealed class Loose
    {
        [ShardKey] public long CustomerId { get; init; }

        public long Id { get; init; }

        public object Quantity { get; init; } = 0;
    }

    public sealed class Keyless
    {
        public long Id { get; init; }
    }

    [Test]
    public async Task A_null_string_key_names_its_row_and_property_and_no_shard_keeps_anything()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (tenant text, id bigint)", stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = Enumerable.Range(0, 20_000).Select(i => new Tenanted { Tenant = i == 15_000 ? null : $"t{i % 500}", Id = i });

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, SmallBatches));

        Assert.That((error!.RowIndex, error.Property), Is.EqualTo(((long?)15_000, "Tenant")));
        Assert.That(error.Message, Does.Contain("Row 15000").And.Contain("Tenanted.Tenant").And.Contain("null"));
        Assert.That(error.RolledBackShards, Is.EquivalentTo(ctx.Shards.Names));
        Assert.That(error.CommittedShards, Is.Empty);
        Assert.That(error.Failures, Is.Empty);
        Assert.That(await BulkChecks.CountsAsync(ctx), Has.All.Property("Value").Zero);
    }

    [Test]
    public async Task A_null_guid_key_names_its_row_and_property()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (tenant uuid, id bigint)", stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = Enumerable.Range(0, 5000).Select(i => new GuidKeyed { Tenant = i == 4001 ? null : Guid.NewGuid(), Id = i });

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, SmallBatches));

        Assert.That((error!.RowIndex, error.Property), Is.EqualTo(((long?)4001, "Tenant")));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    [Test]
    public async Task A_key_the_map_cannot_place_names_its_row_and_property()
    {
        var tenants = new Dictionary<ShardKeyValue, string> { ["acme"] = "s0", ["globex"] = "s1", ["initech"] = "s2", ["umbrella"] = "s3" };
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (tenant text, id bigint)", b => b.UseListSharding(tenants), stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var names = tenants.Keys.Select(k => k.String).ToArray();
        var rows = Enumerable.Range(0, 5000).Select(i => new Tenanted { Tenant = i == 4242 ? "hooli" : names[i % 4], Id = i });

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, SmallBatches));

        Assert.That((error!.RowIndex, error.Property), Is.EqualTo(((long?)4242, "Tenant")));
        Assert.That(error.InnerException, Is.InstanceOf<ShardRoutingException>());
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    [Test]
    public async Task A_property_with_no_column_is_named_before_any_row_is_read()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, id bigint)", stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var read = 0;
        var rows = Enumerable.Range(0, 100).Select(i => { read++; return new WithNickname { CustomerId = i, Id = i }; });

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows));

        Assert.That(error!.Property, Is.EqualTo("Nickname"));
        Assert.That(error.RowIndex, Is.Null);
        Assert.That(error.Message, Does.Contain("'nickname'").And.Contain("[NotMapped]").And.Contain(ctx.Table));
        Assert.That(read, Is.Zero);
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    [Test]
    public async Task A_string_into_an_integer_column_names_the_property_and_a_row()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, id bigint, quantity integer)", stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = Enumerable.Range(0, 1000).Select(i => new Counted { CustomerId = i, Id = i, Quantity = "7" });

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, SmallBatches));

        Assert.That(error!.Property, Is.EqualTo("Quantity"));
        Assert.That(error.RowIndex, Is.InRange(0, 999));
        Assert.That(error.Message, Does.Contain("quantity").And.Contain("int4"));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    [Test]
    public async Task One_mistyped_value_deep_in_the_input_names_exactly_its_row()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, id bigint, quantity integer)", stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = Enumerable.Range(0, 20_000).Select(i => new Loose { CustomerId = i, Id = i, Quantity = i == 16_384 ? "many" : i });

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, SmallBatches));

        Assert.That((error!.RowIndex, error.Property), Is.EqualTo(((long?)16_384, "Quantity")));
        Assert.That(await BulkChecks.CountsAsync(ctx), Has.All.Property("Value").Zero);
    }

    [Test]
    public async Task A_null_row_in_the_input_names_its_position()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = BulkOrder.Many(20_000).Select((r, i) => i == 12_345 ? null! : r);

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, SmallBatches));

        Assert.That((error!.RowIndex, error.Property), Is.EqualTo(((long?)12_345, (string?)null)));
        Assert.That(error.Message, Does.Contain("Row 12345").And.Contain("null"));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    [Test]
    public async Task An_input_that_throws_names_the_row_it_was_reading_and_keeps_the_cause()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, Failing(9000), SmallBatches));

        Assert.That(error!.RowIndex, Is.EqualTo(9000));
        Assert.That(error.InnerException, Is.InstanceOf<IOException>());
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);

        static IEnumerable<BulkOrder> Failing(int after)
        {
            foreach (var order in BulkOrder.Many(after))
            {
                yield return order;
            }

            throw new IOException("the input file ended early");
        }
    }

    [Test]
    public async Task A_missing_table_is_named()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync("no_such_table_here", BulkOrder.Many(10)));

        Assert.That(error!.Message, Does.Contain("no_such_table_here").And.Contain("create it on every shard"));
        Assert.That(error.RolledBackShards, Is.EquivalentTo(ctx.Shards.Names));
    }

    [Test]
    public async Task A_type_without_a_shard_key_is_refused_with_the_fix()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint)", stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ShardRoutingException>(async () => await db.BulkInsertAsync(ctx.Table, new[] { new Keyless { Id = 1 } }));

        Assert.That(error!.Message, Does.Contain("Keyless has no [ShardKey]"));
    }

    [Test]
    public async Task Bad_options_are_refused_before_anything_runs()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () =>
            await db.BulkInsertAsync(ctx.Table, BulkOrder.Many(10), new BulkInsertOptions { BatchSize = 0 }));
        Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () =>
            await db.BulkInsertAsync(ctx.Table, BulkOrder.Many(10), new BulkInsertOptions { ChannelCapacity = 0 }));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    [Test]
    public async Task A_bulk_load_inside_a_single_shard_transaction_is_refused()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        await using var transaction = await db.OnShard("s0").BeginTransactionAsync();

        var error = Assert.ThrowsAsync<ShardRoutingException>(async () => await db.BulkInsertAsync(ctx.Table, BulkOrder.Many(10)));

        Assert.That(error!.Message, Does.Contain("single-shard transaction"));
    }
}

using System.ComponentModel.DataAnnotations.Schema;

namespace ShardKit.Tests.Bulk;

public sealed class BulkInsertColumnTests
{
    private const string Ddl = "create table {0} (cust bigint not null, id bigint not null, order_total numeric, placed timestamptz, status text not null default 'new')";

    public sealed class Renamed
    {
        [ShardKey("cust")] public long CustomerId { get; init; }

        public long Id { get; init; }

        [ShardColumn("order_total")] public decimal Total { get; init; }

        [Column("placed")] public DateTime CreatedAt { get; init; }

        [NotMapped] public string Scratch { get; init; } = "not a column";

        [NotMapped] public string Display => $"order {Id}";
    }

    public sealed class Back
    {
        public long Cust { get; init; }

        public long Id { get; init; }

        public decimal? OrderTotal { get; init; }

        public DateTime? Placed { get; init; }

        public string Status { get; init; } = "";
    }

    [Test]
    public async Task Columns_are_named_by_the_key_attribute_ShardColumn_and_Column_and_NotMapped_properties_are_left_out()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var result = await db.BulkInsertAsync(ctx.Table, Rows(300));

        Assert.That(result.Total, Is.EqualTo(300));
        var back = await ReadAllAsync(ctx);
        Assert.That(back.Select(b => b.Id), Is.EquivalentTo(Enumerable.Range(0, 300).Select(i => (long)i)));
        Assert.That(back.All(b => b.OrderTotal == b.Id * 2m && b.Placed == DateTime.UnixEpoch.AddDays(b.Id) && b.Status == "new"), Is.True);
    }

    [Test]
    public async Task An_explicit_column_list_loads_only_those_columns_and_leaves_the_rest_to_their_defaults()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var result = await db.BulkInsertAsync(ctx.Table, Rows(100), new BulkInsertOptions { Columns = ["id", "cust"] });

        Assert.That(result.Total, Is.EqualTo(100));
        var back = await ReadAllAsync(ctx);
        Assert.That(back, Has.Count.EqualTo(100));
        Assert.That(back.Select(b => (b.OrderTotal, b.Placed)).Distinct(), Is.EqualTo(new[] { ((decimal?)null, (DateTime?)null) }));
        Assert.That(back.All(b => ctx.Source.ShardFor(b.Cust) == ctx.Shards.Names[b.Shard]), Is.True);
    }

    [Test]
    public async Task An_explicit_column_no_property_maps_to_is_refused_before_any_row_is_read()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var read = 0;

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table,
            Rows(10).Select(r => { read++; return r; }), new BulkInsertOptions { Columns = ["cust", "total"] }));

        Assert.That(error!.Message, Does.Contain("'total'").And.Contain("order_total"));
        Assert.That(read, Is.Zero);
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    public sealed class Twice
    {
        [ShardKey] public long CustomerId { get; init; }

        public long Id { get; init; }

        [ShardColumn("id")] public long LegacyId { get; init; }
    }

    [Test]
    public async Task Two_properties_mapped_to_one_column_are_a_configuration_error_naming_both()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, id bigint)", stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<ShardConfigurationException>(async () =>
            await db.BulkInsertAsync(ctx.Table, new[] { new Twice { CustomerId = 1, Id = 1, LegacyId = 1 } }));

        Assert.That(error!.Message, Does.Contain("Id and LegacyId").And.Contain("'id'"));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    public sealed class FieldKeyed
    {
#pragma warning disable CA1051 // a public field key is what this test is about
        [ShardKey("cust")] public long CustomerId;
#pragma warning restore CA1051

        public long Id { get; init; }
    }

    [Test]
    public async Task A_shard_key_declared_as_a_field_is_loaded_into_its_column()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        await db.BulkInsertAsync(ctx.Table, Enumerable.Range(0, 200).Select(i => new FieldKeyed { CustomerId = i % 13, Id = i }));

        var back = await ReadAllAsync(ctx);
        Assert.That(back.Select(b => b.Cust), Is.EquivalentTo(Enumerable.Range(0, 200).Select(i => (long)(i % 13))));
        Assert.That(back.All(b => ctx.Source.ShardFor(b.Cust) == ctx.Shards.Names[b.Shard]), Is.True);
    }

    private static IEnumerable<Renamed> Rows(int count) => Enumerable.Range(0, count).Select(i => new Renamed
    {
        CustomerId = i % 37,
        Id = i,
        Total = i * 2m,
        CreatedAt = DateTime.UnixEpoch.AddDays(i),
    });

    private static async Task<List<(int Shard, long Cust, long Id, decimal? OrderTotal, DateTime? Placed, string Status)>> ReadAllAsync(ShardTestContext ctx)
    {
        var all = new List<(int, long, long, decimal?, DateTime?, string)>();
        for (var shard = 0; shard < ctx.Shards.Count; shard++)
        {
            all.AddRange((await ctx.DirectAsync<Back>(ctx.Shards.Names[shard], $"select * from {ctx.Table}"))
                .Select(b => (shard, b.Cust, b.Id, b.OrderTotal, b.Placed, b.Status)));
        }

        return all;
    }
}

using Npgsql;

namespace ShardKit.Tests.Bulk;

/// <summary>
/// A row the server refuses during COPY (overflow, too long, NOT NULL, CHECK, duplicate key) is named by its position
/// in the input and, where the server names the column, by its property; no shard keeps any row of the load.
/// </summary>
public sealed class BulkInsertServerRowErrorTests
{
    private const string Ddl = "create table {0} (customer_id bigint not null, id bigint not null, amount numeric(5,2), " +
                               "code varchar(5), note text not null, constraint {0}_id_positive check (id >= 0))";

    private static readonly BulkInsertOptions SmallBatches = new() { BatchSize = 100 };

    public sealed class Line
    {
        [ShardKey] public long CustomerId { get; init; }

        public long Id { get; init; }

        public decimal? Amount { get; init; }

        public string? Code { get; init; }

        public string? Note { get; init; }
    }

    private static List<Line> Good(int count) =>
        Enumerable.Range(0, count).Select(i => new Line { CustomerId = i * 7919L % 100_003, Id = i, Amount = i % 500 / 10m, Code = "c" + (i % 1000), Note = "n" }).ToList();

    private static List<Line> WithBadRow(int count, int bad, Func<Line, Line> spoil)
    {
        var rows = Good(count);
        rows[bad] = spoil(rows[bad]);
        return rows;
    }

    private static async Task<BulkInsertException> LoadFailsAsync(ShardTestContext ctx, List<Line> rows, BulkInsertOptions options)
    {
        await using var db = ctx.Source.CreateConnection();
        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, options));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero, "no shard keeps any row of the load");
        return error!;
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task A_numeric_overflow_names_the_row_and_property(bool allOrNothing)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        var rows = WithBadRow(6000, 4321, r => new Line { CustomerId = r.CustomerId, Id = r.Id, Amount = 12345.67m, Code = r.Code, Note = r.Note });

        var error = await LoadFailsAsync(ctx, rows, SmallBatches with { AllOrNothing = allOrNothing });

        Assert.That(error.RowIndex, Is.EqualTo(4321));
        Assert.That(error.Property, Is.EqualTo(nameof(Line.Amount)));
        Assert.That(error.InnerException, Is.InstanceOf<PostgresException>().With.Property("SqlState").EqualTo("22003"));
        Assert.That(error.Failures.Select(f => f.Shard), Is.EqualTo(new[] { ctx.Source.ShardFor(rows[4321].CustomerId) }));
        Assert.That(error.Message, Does.Contain("row 4321").And.Contain("Line.Amount").And.Not.Contain("12345"));
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task A_null_in_a_not_null_column_names_the_row_and_property(bool allOrNothing)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        var rows = WithBadRow(6000, 5998, r => new Line { CustomerId = r.CustomerId, Id = r.Id, Amount = r.Amount, Code = r.Code, Note = null });

        var error = await LoadFailsAsync(ctx, rows, SmallBatches with { AllOrNothing = allOrNothing });

        Assert.That(error.RowIndex, Is.EqualTo(5998));
        Assert.That(error.Property, Is.EqualTo(nameof(Line.Note)));
        Assert.That(error.InnerException, Is.InstanceOf<PostgresException>().With.Property("SqlState").EqualTo("23502"));
        Assert.That(((PostgresException)error.InnerException!).Detail, Does.Contain("Failing row contains"), "the harness asks for error details");
        Assert.That(error.Message, Does.Contain("row 5998 (Line.Note, column 'note')").And.Not.Contain("Failing row"), "the message quotes no value");
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task A_value_too_long_for_its_varchar_names_the_row_and_property(bool allOrNothing)
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        var rows = WithBadRow(6000, 17, r => new Line { CustomerId = r.CustomerId, Id = r.Id, Amount = r.Amount, Code = "much too long", Note = r.Note });

        var error = await LoadFailsAsync(ctx, rows, SmallBatches with { AllOrNothing = allOrNothing });

        Assert.That(error.RowIndex, Is.EqualTo(17));
        Assert.That(error.Property, Is.EqualTo(nameof(Line.Code)));
        Assert.That(error.InnerException, Is.InstanceOf<PostgresException>().With.Property("SqlState").EqualTo("22001"));
        Assert.That(error.Message, Does.Not.Contain("much too long"));
    }

    [Test]
    public async Task A_check_constraint_names_the_row_but_no_property()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        var rows = WithBadRow(3000, 2500, r => new Line { CustomerId = r.CustomerId, Id = -1, Amount = r.Amount, Code = r.Code, Note = r.Note });

        var error = await LoadFailsAsync(ctx, rows, SmallBatches);

        Assert.That(error.RowIndex, Is.EqualTo(2500));
        Assert.That(error.Property, Is.Null, "a CHECK constraint names no column");
        Assert.That(error.InnerException, Is.InstanceOf<PostgresException>().With.Property("SqlState").EqualTo("23514"));
    }

    [Test]
    public async Task A_bad_row_after_many_copies_on_its_shard_is_still_named()
    {
        // Each shard's COPY is completed every RowsPerCopy rows; the row must be found in a later COPY too.
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        var rows = WithBadRow(4000, 3777, r => new Line { CustomerId = r.CustomerId, Id = r.Id, Amount = r.Amount, Code = r.Code, Note = null });

        var error = await LoadFailsAsync(ctx, rows, new BulkInsertOptions { BatchSize = 7, RowsPerCopy = 50 });

        Assert.That(error.RowIndex, Is.EqualTo(3777));
        Assert.That(error.Property, Is.EqualTo(nameof(Line.Note)));
    }

    [Test]
    public async Task A_good_load_split_into_many_copies_counts_every_row()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var result = await db.BulkInsertAsync(ctx.Table, Good(3000), new BulkInsertOptions { BatchSize = 7, RowsPerCopy = 50 });

        Assert.That(result.Total, Is.EqualTo(3000));
        Assert.That(await BulkChecks.CountsAsync(ctx), Is.EquivalentTo(result.RowsPerShard));
    }

    [Test]
    public async Task A_row_whose_constraint_is_checked_only_at_commit_is_not_named()
    {
        const string ddl = "create table {0} (customer_id bigint not null, id bigint not null, amount numeric(5,2), code varchar(5), note text, " +
                           "constraint {0}_id unique (id) deferrable initially deferred)";
        await using var ctx = await ShardTestContext.CreateAsync(ddl, stem: "bulk");
        var rows = Good(2000);
        var clash = rows[1500];
        await using (var db = ctx.Source.CreateConnection())
        {
            await db.ExecuteAsync($"insert into {ctx.Table} (customer_id, id, note) values (@CustomerId, @Id, 'x')", clash);
        }

        await using var loader = ctx.Source.CreateConnection();
        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await loader.BulkInsertAsync(ctx.Table, rows, SmallBatches));

        Assert.That(error!.RowIndex, Is.Null, "the server checks a deferred constraint at commit and names no row");
        Assert.That(error.Property, Is.Null);
    }
}

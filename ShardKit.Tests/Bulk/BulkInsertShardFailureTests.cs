using Npgsql;

namespace ShardKit.Tests.Bulk;

/// <summary>
/// A shard that fails during its COPY rolls every shard back; a shard whose commit fails after every COPY succeeded
/// is the only way to keep a partial load, and the error then says which shards committed.
/// </summary>
public sealed class BulkInsertShardFailureTests
{
    private static readonly BulkInsertOptions SmallBatches = new() { BatchSize = 100 };

    [Test]
    public async Task A_duplicate_key_on_one_shard_rolls_back_every_shard_and_names_it()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl.Replace(", id bigint not null", ", id bigint primary key", StringComparison.Ordinal), stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = BulkOrder.Many(20_000).ToList();
        var clash = rows[15_000];
        var owner = ctx.Source.ShardFor(clash.CustomerId);
        await InsertDirectlyAsync(ctx, owner, clash);

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, SmallBatches));

        Assert.That(error!.Failures.Select(f => f.Shard), Is.EqualTo(new[] { owner }));
        Assert.That(error.Failures[0].Error, Is.InstanceOf<PostgresException>().With.Property("SqlState").EqualTo("23505"));
        Assert.That(error.RowIndex, Is.EqualTo(15_000), "the server names the duplicate's COPY line");
        Assert.That(error.Property, Is.Null, "a unique violation names no single column");
        Assert.That(error.Message, Does.Contain(owner).And.Contain("every shard rolled back"));
        Assert.That(error.RolledBackShards, Is.EquivalentTo(ctx.Shards.Names));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.EqualTo(1), "only the row that was there before");

        // The connection recovers: once the clash is gone, the same load goes through on it.
        await ctx.OnEveryShardAsync($"delete from {ctx.Table}");
        var result = await db.BulkInsertAsync(ctx.Table, rows, SmallBatches);
        Assert.That(result.Total, Is.EqualTo(rows.Count));
        Assert.That(await BulkChecks.CountsAsync(ctx), Is.EquivalentTo(result.RowsPerShard));
    }

    [Test]
    public async Task A_commit_refused_after_every_copy_succeeded_reports_which_shards_committed()
    {
        const string ddl = "create table {0} (customer_id bigint not null, id bigint not null, total numeric not null, created_at timestamptz not null, " +
                           "constraint {0}_id unique (id) deferrable initially deferred)";
        await using var ctx = await ShardTestContext.CreateAsync(ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = BulkOrder.Many(8000).ToList();
        var clash = rows[4000];
        var owner = ctx.Source.ShardFor(clash.CustomerId);
        await InsertDirectlyAsync(ctx, owner, clash);

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows));

        var others = ctx.Shards.Names.Where(n => n != owner).ToArray();
        Assert.That(error!.CommittedShards, Is.EquivalentTo(others));
        Assert.That(error.RolledBackShards, Is.EqualTo(new[] { owner }));
        Assert.That(error.InDoubtShards, Is.Empty);
        Assert.That(error.Failures.Select(f => f.Shard), Is.EqualTo(new[] { owner }));
        Assert.That(error.Message, Does.Contain("commit failed").And.Contain("Committed (they keep their rows)"));
        var counts = await BulkChecks.CountsAsync(ctx);
        Assert.That(counts[owner], Is.EqualTo(1), "the refused shard keeps only its earlier row");
        foreach (var shard in others)
        {
            Assert.That(counts[shard], Is.EqualTo(rows.Count(r => ctx.Source.ShardFor(r.CustomerId) == shard)), shard);
        }
    }

    [Test]
    public async Task A_shard_cut_mid_load_fails_the_load_and_no_shard_keeps_anything()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk", proxied: true);
        await using var db = ctx.Source.CreateConnection();

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, CutAfter(ctx, 10_000, 30_000), SmallBatches));

        ctx.Proxies[1].Restore();
        Assert.That(error!.Failures.Select(f => f.Shard), Is.EqualTo(new[] { "s1" }));
        Assert.That(error.Failures[0].Error, Is.InstanceOf<ShardConnectionException>().With.InnerException.InstanceOf<NpgsqlException>());
        Assert.That(error.RowIndex, Is.Null);
        Assert.That(error.RolledBackShards, Is.EquivalentTo(ctx.Shards.Names));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);

        static IEnumerable<BulkOrder> CutAfter(ShardTestContext ctx, int cutAt, int count)
        {
            foreach (var order in BulkOrder.Many(count))
            {
                if (order.Id == cutAt)
                {
                    ctx.Proxies[1].Cut();
                }

                yield return order;
            }
        }
    }

    [Test]
    public async Task Cancelling_mid_load_leaves_nothing_on_any_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        using var cancel = new CancellationTokenSource();

        Assert.That(async () => await db.BulkInsertAsync(ctx.Table, CancelAfter(cancel, 10_000, 30_000), SmallBatches, cancel.Token),
            Throws.InstanceOf<OperationCanceledException>());

        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
        var again = await db.BulkInsertAsync(ctx.Table, BulkOrder.Many(1000));
        Assert.That(again.Total, Is.EqualTo(1000), "the connection is usable after the cancelled load");

        static IEnumerable<BulkOrder> CancelAfter(CancellationTokenSource cancel, int cancelAt, int count)
        {
            foreach (var order in BulkOrder.Many(count))
            {
                if (order.Id == cancelAt)
                {
                    cancel.Cancel();
                }

                yield return order;
            }
        }
    }

    private static async Task InsertDirectlyAsync(ShardTestContext ctx, string shard, BulkOrder order)
    {
        await using var conn = new NpgsqlConnection(ctx.Shards.ConnectionStrings[ctx.Shards.Names.ToList().IndexOf(shard)]);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand($"insert into {ctx.Table} values ($1, $2, 0, now())", conn);
        cmd.Parameters.Add(new NpgsqlParameter<long> { TypedValue = order.CustomerId });
        cmd.Parameters.Add(new NpgsqlParameter<long> { TypedValue = order.Id });
        await cmd.ExecuteNonQueryAsync();
    }
}

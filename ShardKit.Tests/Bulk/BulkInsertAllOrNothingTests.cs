namespace ShardKit.Tests.Bulk;

/// <summary>Bulk loads and batches that commit through the distributed transaction (two-phase commit).</summary>
public sealed class BulkInsertAllOrNothingTests
{
    private const string PreparedXacts = "select count(*) from pg_prepared_xacts where gid like 'shardkit:%' and database = current_database()";

    [Test]
    public async Task An_all_or_nothing_load_commits_every_shard_through_two_phase_commit()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();

        var result = await db.BulkInsertAsync(ctx.Table, BulkOrder.Many(20_000), new BulkInsertOptions { AllOrNothing = true });

        Assert.That(result.Total, Is.EqualTo(20_000));
        Assert.That(await BulkChecks.CountsAsync(ctx), Is.EqualTo(result.RowsPerShard));
        Assert.That(db.CurrentDistributedTransaction, Is.Null, "the load's own distributed transaction is finished");
    }

    [Test]
    public async Task A_failing_shard_in_an_all_or_nothing_load_leaves_nothing_anywhere()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl.Replace("id bigint not null", "id bigint not null unique", StringComparison.Ordinal), stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = BulkOrder.Many(5_000).Append(BulkOrder.Many(1, firstId: 4_999).Single()); // a duplicate id on one shard

        Assert.ThrowsAsync<BulkInsertException>(async () =>
            await db.BulkInsertAsync(ctx.Table, rows, new BulkInsertOptions { AllOrNothing = true }));

        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That((await ctx.DirectAsync<long>(shard, PreparedXacts))[0], Is.Zero, shard);
        }
    }

    [Test]
    public async Task A_load_inside_an_open_distributed_transaction_joins_it_and_rolls_back_with_it()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        await using (var transaction = await db.BeginDistributedTransactionAsync())
        {
            var result = await db.BulkInsertAsync(ctx.Table, BulkOrder.Many(2_000));
            Assert.That(result.Total, Is.EqualTo(2_000));
            var batch = await db.ExecuteBatchAsync($"insert into {ctx.Table} values (@CustomerId, @Id, @Total, @CreatedAt)", BulkOrder.Many(100, firstId: 10_000));
            Assert.That(batch.Total, Is.EqualTo(100));
            Assert.That(await db.AllShards().ExecuteScalarAsync($"select count(*) from {ctx.Table}", Merge.Count()), Is.EqualTo(2_100),
                "the transaction sees its own rows");
            await transaction.RollbackAsync();
        }

        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    [Test]
    public async Task A_load_and_a_batch_inside_a_distributed_transaction_commit_together()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        await using (var transaction = await db.BeginDistributedTransactionAsync())
        {
            await db.BulkInsertAsync(ctx.Table, BulkOrder.Many(1_000));
            await db.ExecuteBatchAsync($"insert into {ctx.Table} values (@CustomerId, @Id, @Total, @CreatedAt)", BulkOrder.Many(50, firstId: 10_000));
            var commit = await transaction.CommitAsync();
            Assert.That(commit.UsedTwoPhaseCommit, Is.True);
        }

        Assert.That(await BulkChecks.TotalAsync(ctx), Is.EqualTo(1_050));
    }
}

using Npgsql;

namespace ShardKit.Tests.Execution;

/// <summary>Batch writes sent as pipelined NpgsqlBatches: placement, chunking, failures, cancellation, transactions.</summary>
public sealed class PipelinedBatchTests
{
    private const string Ddl = "create table {0} (customer_id bigint not null, id bigint primary key, name varchar(100))";

    public sealed record Item([property: ShardKey] long CustomerId, long Id, string? Name);

    public sealed record SlowItem([property: ShardKey] long CustomerId, long Id, double Pause);

    /// <summary>40 parameters per statement: 1,500 of them need more than one batch under the parameter limit.</summary>
    public sealed class Wide
    {
        [ShardKey] public long CustomerId { get; init; }

        public long Id { get; init; }

        public long C00 { get; init; }

        public long C01 { get; init; }

        public long C02 { get; init; }

        public long C03 { get; init; }

        public long C04 { get; init; }

        public long C05 { get; init; }

        public long C06 { get; init; }

        public long C07 { get; init; }

        public long C08 { get; init; }

        public long C09 { get; init; }

        public long C10 { get; init; }

        public long C11 { get; init; }

        public long C12 { get; init; }

        public long C13 { get; init; }

        public long C14 { get; init; }

        public long C15 { get; init; }

        public long C16 { get; init; }

        public long C17 { get; init; }

        public long C18 { get; init; }

        public long C19 { get; init; }

        public long C20 { get; init; }

        public long C21 { get; init; }

        public long C22 { get; init; }

        public long C23 { get; init; }

        public long C24 { get; init; }

        public long C25 { get; init; }

        public long C26 { get; init; }

        public long C27 { get; init; }

        public long C28 { get; init; }

        public long C29 { get; init; }

        public long C30 { get; init; }

        public long C31 { get; init; }

        public long C32 { get; init; }

        public long C33 { get; init; }

        public long C34 { get; init; }

        public long C35 { get; init; }

        public long C36 { get; init; }

        public long C37 { get; init; }

        public long C38 { get; init; }

        public long C39 { get; init; }
    }

    private static string Insert(ShardTestContext ctx) => $"insert into {ctx.Table} (customer_id, id, name) values (@CustomerId, @Id, @Name)";

    private static List<Item> Items(int count) => Enumerable.Range(1, count).Select(i => new Item(i, i, $"n'{i}")).ToList();

    [Test]
    public async Task Items_over_several_batches_land_on_their_shards_with_their_values()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var items = Items(2_500);

        var result = await db.ExecuteBatchAsync(Insert(ctx), items);

        Assert.That(result.Total, Is.EqualTo(2_500));
        foreach (var shard in ctx.Shards.Names)
        {
            var expected = items.Where(i => ctx.Source.ShardFor(i.CustomerId) == shard).Select(i => $"{i.Id}:{i.Name}").Order().ToList();
            Assert.That(result.AffectedRows[shard], Is.EqualTo(expected.Count), shard);
            Assert.That(await ctx.DirectAsync<string>(shard, $"select id || ':' || name from {ctx.Table} order by 1"), Is.EqualTo(expected), shard);
        }
    }

    [Test]
    public async Task Items_with_many_parameters_are_split_below_the_parameter_limit_and_all_land()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint not null, id bigint primary key, c00 bigint, c01 bigint, c02 bigint, c03 bigint, c04 bigint, c05 bigint, c06 bigint, c07 bigint, c08 bigint, c09 bigint, c10 bigint, c11 bigint, c12 bigint, c13 bigint, c14 bigint, c15 bigint, c16 bigint, c17 bigint, c18 bigint, c19 bigint, c20 bigint, c21 bigint, c22 bigint, c23 bigint, c24 bigint, c25 bigint, c26 bigint, c27 bigint, c28 bigint, c29 bigint, c30 bigint, c31 bigint, c32 bigint, c33 bigint, c34 bigint, c35 bigint, c36 bigint, c37 bigint, c38 bigint, c39 bigint)");
        await using var db = ctx.Source.CreateConnection();
        var items = Enumerable.Range(1, 1_500).Select(i => (long)i).Select(id => new Wide { CustomerId = id, Id = id, C00 = id + 0, C01 = id + 1, C02 = id + 2, C03 = id + 3, C04 = id + 4, C05 = id + 5, C06 = id + 6, C07 = id + 7, C08 = id + 8, C09 = id + 9, C10 = id + 10, C11 = id + 11, C12 = id + 12, C13 = id + 13, C14 = id + 14, C15 = id + 15, C16 = id + 16, C17 = id + 17, C18 = id + 18, C19 = id + 19, C20 = id + 20, C21 = id + 21, C22 = id + 22, C23 = id + 23, C24 = id + 24, C25 = id + 25, C26 = id + 26, C27 = id + 27, C28 = id + 28, C29 = id + 29, C30 = id + 30, C31 = id + 31, C32 = id + 32, C33 = id + 33, C34 = id + 34, C35 = id + 35, C36 = id + 36, C37 = id + 37, C38 = id + 38, C39 = id + 39 }).ToList();
        Assert.That(items.Count * 42, Is.GreaterThan(PipelinedBatch.MaxParameters), "the test needs more parameters than one batch takes");

        var result = await db.ExecuteBatchAsync($"insert into {ctx.Table} (customer_id, id, c00, c01, c02, c03, c04, c05, c06, c07, c08, c09, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19, c20, c21, c22, c23, c24, c25, c26, c27, c28, c29, c30, c31, c32, c33, c34, c35, c36, c37, c38, c39) values (@CustomerId, @Id, @C00, @C01, @C02, @C03, @C04, @C05, @C06, @C07, @C08, @C09, @C10, @C11, @C12, @C13, @C14, @C15, @C16, @C17, @C18, @C19, @C20, @C21, @C22, @C23, @C24, @C25, @C26, @C27, @C28, @C29, @C30, @C31, @C32, @C33, @C34, @C35, @C36, @C37, @C38, @C39)", items);

        Assert.That(result.Total, Is.EqualTo(1_500));
        foreach (var shard in ctx.Shards.Names)
        {
            var mine = items.Where(i => ctx.Source.ShardFor(i.CustomerId) == shard).ToList();
            Assert.That(await ctx.DirectAsync<long>(shard, $"select coalesce(sum(c39 - id), 0)::bigint from {ctx.Table}"), Is.EqualTo(new[] { 39L * mine.Count }), shard);
            Assert.That(await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"), Is.EqualTo(new[] { (long)mine.Count }), shard);
        }
    }

    [Test]
    public async Task A_failing_item_in_the_middle_leaves_nothing_on_any_shard_and_names_its_index_and_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var items = Items(2_500);
        items[1_234] = items[10] with { Name = "duplicate" }; // the same primary key, on the same shard, after item 10
        var failing = ctx.Source.ShardFor(items[10].CustomerId);

        var error = Assert.ThrowsAsync<BroadcastWriteException>(() => db.ExecuteBatchAsync(Insert(ctx), items))!;

        Assert.That(error.FailedShards, Is.EqualTo(new[] { failing }));
        var item = error.Failures[0].Error as BatchItemException;
        Assert.That(item, Is.Not.Null, error.Failures[0].Error.ToString());
        Assert.That(item!.ItemIndex, Is.EqualTo(1_234));
        Assert.That(item.Shard, Is.EqualTo(failing));
        Assert.That(item.InnerException, Is.TypeOf<PostgresException>().With.Property("SqlState").EqualTo(PostgresErrorCodes.UniqueViolation));
        Assert.That(error.Message, Does.Contain($"Item 1234 of the batch failed on shard '{failing}'"));
        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That(await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"), Is.EqualTo(new[] { 0L }), shard);
        }
    }

    [Test]
    public async Task Cancelling_in_the_middle_of_a_batch_leaves_nothing_on_any_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var items = Enumerable.Range(1, 2_500).Select(i => new SlowItem(i, i, i == 1_800 ? 30 : 0)).ToList();
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        var started = DateTime.UtcNow;

        Assert.That(async () => await db.ExecuteBatchAsync($"insert into {ctx.Table} (customer_id, id) select @CustomerId, @Id from pg_sleep(@Pause)",
            items, cancellationToken: cancel.Token), Throws.InstanceOf<OperationCanceledException>());

        Assert.That(DateTime.UtcNow - started, Is.LessThan(TimeSpan.FromSeconds(25)), "the sleeping statement was cancelled on the server");
        foreach (var shard in ctx.Shards.Names)
        {
            Assert.That(await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"), Is.EqualTo(new[] { 0L }), shard);
        }

        Assert.That((await db.ExecuteBatchAsync(Insert(ctx), Items(10))).Total, Is.EqualTo(10), "the connection is usable again");
    }

    [Test]
    public async Task A_batch_inside_a_shard_transaction_joins_it_and_commits_with_it()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var shard = ctx.Shards.Names[0];
        var items = Items(3_000).Where(i => ctx.Source.ShardFor(i.CustomerId) == shard).ToList();

        await using (var tx = await db.OnShard(shard).BeginTransactionAsync())
        {
            var result = await db.ExecuteBatchAsync(Insert(ctx), items);
            Assert.That(result.AffectedRows, Is.EqualTo(new Dictionary<string, int> { [shard] = items.Count }));
            Assert.That(await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"), Is.EqualTo(new[] { 0L }), "not visible before the commit");
            await tx.CommitAsync();
        }

        Assert.That(await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"), Is.EqualTo(new[] { (long)items.Count }));
    }

    [Test]
    public async Task A_batch_inside_a_shard_transaction_with_an_item_of_another_shard_is_refused_and_names_the_item()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var shard = ctx.Shards.Names[0];
        var items = Items(50);
        var stranger = items.FindIndex(i => ctx.Source.ShardFor(i.CustomerId) != shard);

        await using (await db.OnShard(shard).BeginTransactionAsync())
        {
            var error = Assert.ThrowsAsync<ShardRoutingException>(() => db.ExecuteBatchAsync(Insert(ctx), items))!;
            Assert.That(error.Message, Does.Contain($"Item {stranger} of the batch routes to shard").And.Contain("Nothing was written"));
        }

        Assert.That(await db.AllShards().ExecuteScalarAsync($"select count(*) from {ctx.Table}", Merge.Count()), Is.Zero);
    }

    [Test]
    public async Task A_failing_batch_inside_a_distributed_transaction_names_the_item_and_the_rollback_leaves_nothing()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var items = Items(1_500);
        items[1_400] = items[3] with { };

        await using (var tx = await db.BeginDistributedTransactionAsync())
        {
            var error = Assert.ThrowsAsync<BroadcastWriteException>(() => db.ExecuteBatchAsync(Insert(ctx), items))!;
            Assert.That(error.Failures.Select(f => f.Error), Has.One.InstanceOf<BatchItemException>().With.Property("ItemIndex").EqualTo(1_400));
            await tx.RollbackAsync();
        }

        Assert.That(await db.AllShards().ExecuteScalarAsync($"select count(*) from {ctx.Table}", Merge.Count()), Is.Zero);
    }

    [Test]
    public async Task An_empty_batch_writes_nothing_and_reports_no_rows()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();

        var result = await db.ExecuteBatchAsync(Insert(ctx), new List<Item>());

        Assert.That(result.Total, Is.Zero);
        Assert.That(result.AffectedRows, Is.Empty);
        Assert.That(await db.ExecuteAsync(Insert(ctx), new List<Item>()), Is.Zero);
    }

    [Test]
    public async Task A_routed_execute_with_a_list_pipelines_each_shard_and_a_refused_item_leaves_its_shard_untouched()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var items = Items(2_500);
        Assert.That(await db.ExecuteAsync(Insert(ctx), items.Take(2_000).ToList()), Is.EqualTo(2_000));

        var more = Items(2_500).Skip(2_000).Append(items[5]).ToList(); // item 500 repeats a key that is already stored
        var failing = ctx.Source.ShardFor(items[5].CustomerId);
        var error = Assert.ThrowsAsync<BroadcastWriteException>(() => db.ExecuteAsync(Insert(ctx), more))!;

        Assert.That(error.Failures.Single().Error, Is.InstanceOf<BatchItemException>().With.Property("ItemIndex").EqualTo(500));
        Assert.That(error.NotAppliedShards, Is.EqualTo(new[] { failing }));
        Assert.That(await ctx.DirectAsync<long>(failing, $"select count(*) from {ctx.Table} where id > 2000"), Is.EqualTo(new[] { 0L }));
    }

    [Test]
    public async Task A_synchronous_execute_with_a_list_lands_every_item_on_its_shard()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        using var db = ctx.Source.CreateConnection();
        var items = Items(1_200);

        Assert.That(db.Execute(Insert(ctx), items), Is.EqualTo(1_200));

        foreach (var shard in ctx.Shards.Names)
        {
            var expected = items.Count(i => ctx.Source.ShardFor(i.CustomerId) == shard);
            Assert.That(await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"), Is.EqualTo(new[] { (long)expected }), shard);
        }
    }

    [Test]
    public async Task A_statement_only_dapper_can_bind_runs_row_by_row_and_still_names_a_failing_item()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl);
        await using var db = ctx.Source.CreateConnection();
        var items = Items(30);
        items[20] = items[2] with { };
        var sql = $"insert into {ctx.Table} (customer_id, id, name) values (@CustomerId, {{=Id}}, @Name)"; // Dapper's literal replacement

        var error = Assert.ThrowsAsync<BroadcastWriteException>(() => db.ExecuteBatchAsync(sql, items))!;
        Assert.That(error.Failures.Single().Error, Is.InstanceOf<BatchItemException>().With.Property("ItemIndex").EqualTo(20));

        var result = await db.ExecuteBatchAsync(sql, Items(30));
        Assert.That(result.Total, Is.EqualTo(30));
        Assert.That(await db.AllShards().ExecuteScalarAsync($"select count(*) from {ctx.Table}", Merge.Count()), Is.EqualTo(30));
    }
}

using Order = ShardKit.Tests.Merging.OrderSample.Order;

namespace ShardKit.Tests.Merging;

/// <summary>Every merge on real shards gives exactly what one database holding all the rows answers.</summary>
public sealed class FanOutMergeTests
{
    private const string Newest = "select * from {0} order by created_at desc, id desc";
    private static readonly MergePlan<Order> NewestFirst = Merge.OrderByDescending<Order, DateTime>(o => o.CreatedAt).ThenByDescending(o => o.Id);
    private OrderSample _sample = null!;

    [OneTimeSetUp]
    public async Task LoadAsync() => _sample = await OrderSample.CreateAsync(3000, seed: 20261126);

    [OneTimeTearDown]
    public async Task DropAsync() => await _sample.DisposeAsync();

    [Test]
    public async Task Ordered_merge_with_a_limit_equals_the_single_database()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var plan = NewestFirst.Take(50);
        var rows = await db.AllShards().QueryAsync(_sample.Sql(Newest + " limit @ShardLimit"), new { plan.ShardLimit }, plan);

        Assert.That(rows.ToList(), Is.EqualTo(await _sample.SingleAsync<Order>(Newest + " limit 50")));
        Assert.That(rows.IsComplete, Is.True);
    }

    [Test]
    public async Task Skip_and_take_equal_offset_and_limit_on_the_single_database()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var plan = NewestFirst.Skip(120).Take(40);
        var rows = await db.AllShards().QueryAsync(_sample.Sql(Newest + " limit @ShardLimit"), new { plan.ShardLimit }, plan);

        Assert.That(rows.ToList(), Is.EqualTo(await _sample.SingleAsync<Order>(Newest + " offset 120 limit 40")));
    }

    [Test]
    public async Task Keyset_pages_walk_every_row_exactly_once_in_order()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        const int page = 250;
        var walked = new List<Order>();
        Order? last = null;
        while (true)
        {
            var plan = last is null ? NewestFirst.Take(page) : NewestFirst.After(last).Take(page);
            var sql = last is null
                ? Newest + " limit @Take"
                : "select * from {0} where (created_at, id) < (@At, @Id) order by created_at desc, id desc limit @Take";
            var rows = await db.AllShards().QueryAsync(_sample.Sql(sql), new { Take = page, At = last?.CreatedAt, last?.Id }, plan);
            walked.AddRange(rows);
            if (rows.Count < page)
            {
                break;
            }

            last = rows[^1];
        }

        Assert.That(walked, Is.EqualTo(await _sample.SingleAsync<Order>(Newest)));
    }

    [Test]
    public async Task Unbuffered_stream_with_fewer_connections_than_shards_equals_the_single_database()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var streamed = new List<Order>();
        await foreach (var order in db.AllShards(new FanOutOptions { MaxParallelism = 2 }).QueryUnbufferedAsync(_sample.Sql(Newest), null, NewestFirst))
        {
            streamed.Add(order);
        }

        Assert.That(streamed, Is.EqualTo(await _sample.SingleAsync<Order>(Newest)));
    }

    [Test]
    public async Task Ascending_merge_by_text_with_collate_C_equals_the_single_database()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        const string sql = "select * from {0} order by status collate \"C\", id";
        var plan = Merge.OrderBy<Order, string>(o => o.Status).ThenBy(o => o.Id);
        var rows = await db.AllShards().QueryAsync(_sample.Sql(sql), null, plan);
        Assert.That(rows.ToList(), Is.EqualTo(await _sample.SingleAsync<Order>(sql)));
    }

    [Test]
    public async Task Nullable_keys_merge_with_nulls_where_PostgreSQL_puts_them()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        const string sql = "select * from {0} order by region collate \"C\" desc, id";
        var plan = Merge.OrderByDescending<Order, string?>(o => o.Region).ThenBy(o => o.Id);
        var rows = await db.AllShards().QueryAsync(_sample.Sql(sql), null, plan);
        Assert.That(rows.ToList(), Is.EqualTo(await _sample.SingleAsync<Order>(sql)));
    }

    [Test]
    public async Task Scalar_aggregates_equal_the_single_database()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var all = db.AllShards();
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select count(*) from {0}"), Merge.Count()),
            Is.EqualTo((await _sample.SingleAsync<long>("select count(*) from {0}"))[0]));
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select sum(total) from {0}"), Merge.Sum<decimal>()),
            Is.EqualTo((await _sample.SingleAsync<decimal>("select sum(total) from {0}"))[0]));
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select min(created_at) from {0}"), Merge.Min<DateTime?>()),
            Is.EqualTo((await _sample.SingleAsync<DateTime>("select min(created_at) from {0}"))[0]));
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select max(total) from {0}"), Merge.Max<decimal>()),
            Is.EqualTo((await _sample.SingleAsync<decimal>("select max(total) from {0}"))[0]));
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select sum(total), count(total) from {0}"), Merge.Average()),
            Is.EqualTo((await _sample.SingleAsync<decimal>("select avg(total) from {0}"))[0]).Within(0.000000001m));
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select sum(total) from {0} where id < 0"), Merge.Sum<decimal?>()), Is.Null);
    }

    [Test]
    public async Task Average_with_a_missing_count_column_says_what_to_select()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        Assert.That(() => db.AllShards().ExecuteScalarAsync(_sample.Sql("select avg(total) from {0}"), Merge.Average()),
            Throws.InstanceOf<ShardKitException>().With.Message.Contains("select sum(x), count(x)"));
    }

    public sealed record StatusTotals(string Status, long Count, decimal Total);

    [Test]
    public async Task Group_by_combine_equals_the_single_database_group_by()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        const string sql = "select status, count(*) as count, sum(total) as total from {0} group by status";
        var plan = Merge.GroupBy<StatusTotals, string>(s => s.Status, (a, b) => a with { Count = a.Count + b.Count, Total = a.Total + b.Total })
            .OrderBy(s => s.Status);
        var rows = await db.AllShards().QueryAsync(_sample.Sql(sql), null, plan);
        Assert.That(rows.ToList(), Is.EqualTo(await _sample.SingleAsync<StatusTotals>(sql + " order by status collate \"C\"")));
    }

    [Test]
    public async Task Distinct_equals_the_single_database_distinct()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        const string sql = "select distinct region from {0}";
        var rows = await db.AllShards().QueryAsync(_sample.Sql(sql), null, Merge.Distinct<string?>());
        Assert.That(rows, Is.EquivalentTo(await _sample.SingleAsync<string?>(sql)));
        Assert.That(rows, Is.Unique);
    }

    [Test]
    public async Task First_and_single_find_a_row_by_a_column_that_is_not_the_key()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var all = db.AllShards();
        var wanted = _sample.Orders[1234];
        const string byId = "select * from {0} where id = @Id";
        Assert.That(await all.QueryFirstOrDefaultAsync<Order>(_sample.Sql(byId), new { wanted.Id }), Is.EqualTo(wanted));
        Assert.That(await all.QuerySingleAsync<Order>(_sample.Sql(byId), new { wanted.Id }), Is.EqualTo(wanted));
        Assert.That(await all.QueryFirstOrDefaultAsync<Order>(_sample.Sql(byId), new { Id = -1L }), Is.Null);
        Assert.That(() => all.QueryFirstAsync<Order>(_sample.Sql(byId), new { Id = -1L }), Throws.InvalidOperationException);
        Assert.That(() => all.QuerySingleAsync<Order>(_sample.Sql("select * from {0} where status = 'paid'")),
            Throws.InvalidOperationException.With.Message.Contains("more than one"));
        Assert.That(all.QueryFirst<Order>(_sample.Sql(Newest), null, NewestFirst), Is.EqualTo((await _sample.SingleAsync<Order>(Newest + " limit 1"))[0]));
    }

    [Test]
    public async Task Rows_tagged_with_their_shard_come_from_the_shard_their_key_names()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var rows = await db.AllShards().QueryWithShardAsync<Order>(_sample.Sql("select * from {0}"));
        Assert.That(rows, Has.Count.EqualTo(_sample.Orders.Count));
        Assert.That(rows.Select(r => r.Shard).Distinct().Count(), Is.EqualTo(_sample.Context.Shards.Count));
        foreach (var row in rows)
        {
            Assert.That(row.Shard, Is.EqualTo(_sample.Context.Source.ShardFor(row.Row.CustomerId)));
        }
    }

    [Test]
    public async Task A_query_whose_order_by_does_not_match_the_plan_raises_an_order_error_naming_a_shard()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var error = Assert.ThrowsAsync<ShardMergeOrderException>(() =>
            db.AllShards().QueryAsync(_sample.Sql("select * from {0} order by created_at, id"), null, NewestFirst));
        Assert.That(_sample.Context.Shards.Names, Does.Contain(error!.Shard));
    }

    [Test]
    public async Task Sync_query_merges_like_the_async_one()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var plan = NewestFirst.Take(10);
        Assert.That(db.AllShards().Query(_sample.Sql(Newest + " limit 10"), null, plan).ToList(),
            Is.EqualTo(await _sample.SingleAsync<Order>(Newest + " limit 10")));
    }

    [Test]
    public async Task Fan_out_reads_that_order_or_limit_without_a_plan_are_refused_before_any_shard_is_asked()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var all = db.AllShards();
        // The table does not exist: a refusal rather than a PostgresException proves no shard was asked.
        const string sql = "select * from no_such_table_ever order by id desc limit 3";
        var refusals = new Func<Task>[]
        {
            () => all.QueryAsync<Order>(sql),
            () => all.QueryWithShardAsync<Order>(sql),
            () => all.QueryFirstAsync<Order>(sql),
            () => all.QueryFirstOrDefaultAsync<Order>(sql),
            () => all.QuerySingleAsync<Order>(sql),
            () => all.QuerySingleOrDefaultAsync<Order>(sql),
            () => Task.Run(() => all.Query<Order>(sql)),
            () => Task.Run(() => all.QueryFirst<Order>(sql)),
            async () => await all.QueryUnbufferedAsync<Order>(sql).ToListAsync(),
        };
        foreach (var refusal in refusals)
        {
            var error = Assert.ThrowsAsync<ShardMergeRequiredException>(() => refusal());
            Assert.That(error!.Clauses, Is.EqualTo(new[] { "ORDER BY", "LIMIT" }));
            Assert.That(error.Message, Does.Contain("Merge.OrderByDescending(").And.Contain(".Take(n)").And.Contain("Merge.Concat<T>()"));
        }
    }

    [Test]
    public async Task Aggregates_distinct_and_groups_without_a_plan_name_the_plan_to_use()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var all = db.AllShards();
        Assert.That(() => all.QueryAsync<long>(_sample.Sql("select count(*) from {0}")),
            Throws.InstanceOf<ShardMergeRequiredException>().With.Message.Contains("Merge.Count()"));
        Assert.That(() => all.QueryAsync<string>(_sample.Sql("select distinct status from {0}")),
            Throws.InstanceOf<ShardMergeRequiredException>().With.Message.Contains("Merge.Distinct<T>()"));
        Assert.That(() => all.QueryAsync<StatusTotals>(_sample.Sql("select status, count(*) as count, sum(total) as total from {0} group by status")),
            Throws.InstanceOf<ShardMergeRequiredException>().With.Message.Contains("Merge.GroupBy(key, combine)"));
        Assert.That(() => all.QuerySingleAsync<long>(_sample.Sql("select max(id) from {0}")),
            Throws.InstanceOf<ShardMergeRequiredException>().With.Message.Contains("QuerySingle takes no plan"));
    }

    [Test]
    public async Task Concat_on_purpose_returns_each_shards_limited_rows_in_arrival_order()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        const string sql = "select * from {0} order by id desc limit 3";
        var rows = await db.AllShards().QueryAsync(_sample.Sql(sql), null, Merge.Concat<Order>());
        Assert.That(rows, Has.Count.EqualTo(3 * _sample.Context.Shards.Count));
        var first = await db.AllShards().QueryFirstAsync(_sample.Sql(sql), null, Merge.Concat<Order>());
        Assert.That(rows.Select(r => r.Id), Does.Contain(first.Id));
    }

    [Test]
    public async Task Subqueries_ctes_and_window_clauses_need_no_plan()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var rows = await db.AllShards().QueryAsync<Order>(_sample.Sql(
            "with recent as (select * from {0} order by id desc limit 5) select * from (select * from recent order by id limit 3) t " +
            "where 'order by' <> $$limit$$ -- order by id\n"));
        Assert.That(rows, Has.Count.EqualTo(3 * _sample.Context.Shards.Count));
        var ranked = await db.AllShards().QueryAsync<long>(_sample.Sql("select count(*) over (order by id) from {0} where id < 10"));
        Assert.That(ranked, Has.Count.EqualTo(_sample.Orders.Count(o => o.Id < 10)));
    }

    public sealed class RegionStatus
    {
        public string? Region { get; set; }

        public string Status { get; set; } = "";
    }

    [Test]
    public async Task Distinct_over_a_plain_class_equals_the_single_database_distinct()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        const string sql = "select distinct region, status from {0}";
        var rows = await db.AllShards().QueryAsync(_sample.Sql(sql), null, Merge.Distinct<RegionStatus>());
        var single = await _sample.SingleAsync<RegionStatus>(sql);
        Assert.That(rows.Select(r => (r.Region, r.Status)), Is.EquivalentTo(single.Select(r => (r.Region, r.Status))));
    }

    [TestCase("")]
    [TestCase("where status = 'paid'")]
    [TestCase("where id <= 3")]
    [TestCase("where id = 17")]
    public async Task Average_shows_the_digits_of_the_single_database_avg(string where)
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var all = db.AllShards();
        var average = await all.ExecuteScalarAsync(_sample.Sql($"select sum(total), count(total) from {{0}} {where}"), Merge.Average());
        Assert.That(average!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture),
            Is.EqualTo((await _sample.SingleAsync<string>($"select avg(total)::text from {{0}} {where}"))[0]));
        var ofIds = await all.ExecuteScalarAsync(_sample.Sql($"select sum(id), count(id) from {{0}} {where}"), Merge.Average());
        Assert.That(ofIds!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture),
            Is.EqualTo((await _sample.SingleAsync<string>($"select avg(id)::text from {{0}} {where}"))[0]));
    }

    [Test]
    public async Task Aggregates_over_no_rows_are_null_for_nullable_types_as_in_SQL()
    {
        await using var db = _sample.Context.Source.CreateConnection();
        var all = db.AllShards();
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select min(total) from {0} where id < 0"), Merge.Min<decimal?>()), Is.Null);
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select max(created_at) from {0} where id < 0"), Merge.Max<DateTime?>()), Is.Null);
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select sum(id) from {0} where id < 0"), Merge.Sum<long?>()), Is.Null);
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select sum(total), count(total) from {0} where id < 0"), Merge.Average()), Is.Null);
        Assert.That(await all.ExecuteScalarAsync(_sample.Sql("select max(status) from {0} where id < 0"), Merge.Max<string?>()), Is.Null);
    }
}

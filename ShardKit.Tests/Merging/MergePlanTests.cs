namespace ShardKit.Tests.Merging;

public sealed class MergePlanTests
{
    private sealed record Row(int Shard, long Key, string? Text = null);

    [Test]
    public async Task Ordered_merge_of_sorted_shards_equals_sorting_everything()
    {
        var random = new Random(7);
        var shards = Enumerable.Range(0, 5)
            .Select(s => Enumerable.Range(0, random.Next(0, 300)).Select(_ => new Row(s, random.Next(0, 500))).OrderBy(r => r.Key).ToArray())
            .ToArray();

        var merged = await InMemoryShards.RunAsync(Merge.OrderBy<Row, long>(r => r.Key), shards);

        // LINQ's OrderBy is stable: equal keys keep shard order, which is how the merge breaks ties.
        Assert.That(merged, Is.EqualTo(shards.SelectMany(s => s).OrderBy(r => r.Key).ToList()));
    }

    [Test]
    public async Task Descending_merge_with_a_second_key_equals_sorting_everything()
    {
        var random = new Random(11);
        var shards = Enumerable.Range(0, 4)
            .Select(s => Enumerable.Range(0, 200).Select(_ => new Row(s, random.Next(0, 20), random.Next(0, 50).ToString("D2", System.Globalization.CultureInfo.InvariantCulture)))
                .OrderByDescending(r => r.Key).ThenBy(r => r.Text, StringComparer.Ordinal).ToArray())
            .ToArray();

        var plan = Merge.OrderByDescending<Row, long>(r => r.Key).ThenBy(r => r.Text);
        var merged = await InMemoryShards.RunAsync(plan, shards);

        Assert.That(merged, Is.EqualTo(shards.SelectMany(s => s).OrderByDescending(r => r.Key).ThenBy(r => r.Text, StringComparer.Ordinal).ToList()));
    }

    [Test]
    public async Task Ties_between_shards_go_to_the_shard_listed_first()
    {
        var merged = await InMemoryShards.RunAsync(Merge.OrderBy<Row, long>(r => r.Key),
            [new Row(0, 1), new Row(0, 2)], [new Row(1, 1), new Row(1, 2)]);
        Assert.That(merged.Select(r => r.Shard), Is.EqualTo(new[] { 0, 1, 0, 1 }));
    }

    [Test]
    public async Task Nulls_sort_last_ascending_and_first_descending_as_in_PostgreSQL()
    {
        var ascending = await InMemoryShards.RunAsync(Merge.OrderBy<Row, string?>(r => r.Text),
            [new Row(0, 1, "a"), new Row(0, 2, null)], [new Row(1, 3, "b")]);
        Assert.That(ascending.Select(r => r.Text), Is.EqualTo(new[] { "a", "b", null }));

        var descending = await InMemoryShards.RunAsync(Merge.OrderByDescending<Row, string?>(r => r.Text),
            [new Row(0, 2, null), new Row(0, 1, "a")], [new Row(1, 3, "b")]);
        Assert.That(descending.Select(r => r.Text), Is.EqualTo(new[] { null, "b", "a" }));
    }

    [Test]
    public void A_shard_out_of_merge_order_is_named_with_the_row_that_broke_it()
    {
        var error = Assert.ThrowsAsync<ShardMergeOrderException>(() => InMemoryShards.RunAsync(Merge.OrderBy<Row, long>(r => r.Key),
            [new Row(0, 1), new Row(0, 5)], [new Row(1, 2), new Row(1, 9), new Row(1, 3)]));
        Assert.That(error!.Shard, Is.EqualTo("s1"));
        Assert.That(error.RowIndex, Is.EqualTo(2));
        Assert.That(error.Message, Does.Contain("ORDER BY"));
    }

    [Test]
    public async Task Skip_and_take_cut_the_merged_order_and_say_what_each_shard_must_return()
    {
        var plan = Merge.OrderBy<Row, long>(r => r.Key).Skip(2).Take(3);
        var merged = await InMemoryShards.RunAsync(plan,
            [new Row(0, 1), new Row(0, 3), new Row(0, 5), new Row(0, 7)], [new Row(1, 2), new Row(1, 4), new Row(1, 6)]);

        Assert.That(merged.Select(r => r.Key), Is.EqualTo(new long[] { 3, 4, 5 }));
        Assert.That(plan.ShardLimit, Is.EqualTo(5));
        Assert.That(Merge.OrderBy<Row, long>(r => r.Key).ShardLimit, Is.Null);
    }

    [Test]
    public async Task Skip_after_take_skips_within_the_taken_rows_as_LINQ_does()
    {
        var plan = Merge.OrderBy<int, int>(x => x).Take(10).Skip(5);
        Assert.That(await InMemoryShards.RunAsync(plan, Enumerable.Range(0, 50).ToArray()), Is.EqualTo(new[] { 5, 6, 7, 8, 9 }));
        Assert.That(plan.ShardLimit, Is.EqualTo(10));
    }

    [Test]
    public async Task After_a_cursor_only_rows_strictly_later_in_the_order_remain()
    {
        var plan = Merge.OrderBy<Row, long>(r => r.Key).ThenBy(r => r.Shard).After(new Row(0, 3));
        var merged = await InMemoryShards.RunAsync(plan, [new Row(0, 1), new Row(0, 3), new Row(0, 5)], [new Row(1, 3), new Row(1, 4)]);
        Assert.That(merged, Is.EqualTo(new[] { new Row(1, 3), new Row(1, 4), new Row(0, 5) }));
    }

    public sealed class PlainRow
    {
        public string? Region { get; set; }

        public byte[] Data { get; set; } = [];

        public int Count;
    }

    [Test]
    public async Task Distinct_compares_plain_classes_by_their_values_not_by_reference()
    {
        PlainRow Row(string? region, int count, params byte[] data) => new() { Region = region, Count = count, Data = data };
        var merged = await InMemoryShards.RunAsync(Merge.Distinct<PlainRow>(),
            [Row("eu", 1, 1, 2), Row(null, 1)], [Row("eu", 1, 1, 2), Row("eu", 2, 1, 2), Row(null, 1), Row("eu", 1, 1)]);
        // Distinct keeps no order (as SQL's): the shards' rows arrive interleaved as they come.
        Assert.That(merged.Select(r => (r.Region, r.Count, r.Data.Length)), Is.EquivalentTo(new[] { ("eu", 1, 2), (null, 1, 0), ("eu", 2, 2), ("eu", 1, 1) }));
    }

    [Test]
    public async Task Distinct_compares_dynamic_rows_column_by_column()
    {
        static object Row(string region, long id) => new Dictionary<string, object?> { ["region"] = region, ["id"] = id };
        var merged = await InMemoryShards.RunAsync(Merge.Distinct<object>(), [Row("eu", 1), Row("us", 1)], [Row("eu", 1), Row("eu", 2)]);
        Assert.That(merged, Has.Count.EqualTo(3));
    }

    [Test]
    public async Task Distinct_keeps_the_first_of_equal_rows()
    {
        var merged = await InMemoryShards.RunAsync(Merge.Distinct<string>(), ["a", "b"], ["b", "c"], ["a"]);
        Assert.That(merged, Is.EquivalentTo(new[] { "a", "b", "c" }));
    }

    [Test]
    public async Task Group_by_combines_partial_groups_and_then_orders_and_cuts_them()
    {
        var plan = Merge.GroupBy<(string Status, long Sum), string>(r => r.Status, (a, b) => (a.Status, a.Sum + b.Sum))
            .OrderByDescending(r => r.Sum).Take(2);
        var merged = await InMemoryShards.RunAsync(plan, [("new", 5), ("paid", 1)], [("paid", 10), ("void", 2)], [("new", 1), ("void", 1)]);
        Assert.That(merged, Is.EqualTo(new[] { ("paid", 11L), ("new", 6L) }));
    }

    [Test]
    public async Task Group_by_keeps_null_keys_as_a_group_of_their_own()
    {
        var plan = Merge.GroupBy<(string? Region, int Count), string?>(r => r.Region, (a, b) => (a.Region, a.Count + b.Count)).OrderBy(r => r.Region);
        var merged = await InMemoryShards.RunAsync(plan, [(null, 1), ("eu", 2)], [(null, 3)]);
        Assert.That(merged, Is.EqualTo(new[] { ("eu", 2), ((string?)null, 4) }));
    }

    [Test]
    public async Task Concat_returns_every_row_of_every_shard()
    {
        var merged = await InMemoryShards.RunAsync(Merge.Concat<int>(), [1, 2], [], [3]);
        Assert.That(merged, Is.EquivalentTo(new[] { 1, 2, 3 }));
    }

    [Test]
    public async Task Take_zero_returns_nothing()
    {
        Assert.That(await InMemoryShards.RunAsync(Merge.Concat<int>().Take(0), [1]), Is.Empty);
    }

    [Test]
    public void Plans_are_immutable()
    {
        var ordered = Merge.OrderBy<Row, long>(r => r.Key);
        var page = ordered.Take(10);
        Assert.That(ordered.TakeCount, Is.Null);
        Assert.That(page.TakeCount, Is.EqualTo(10));
        Assert.That(page.Take(20).TakeCount, Is.EqualTo(10), "a later Take cannot widen an earlier one");
    }

    [Test]
    public void Misused_plans_say_what_to_do()
    {
        Assert.That(() => Merge.Concat<Row>().After(new Row(0, 1)), Throws.InvalidOperationException.With.Message.Contains("Merge.OrderBy"));
        Assert.That(() => Merge.Concat<Row>().ThenBy(r => r.Key), Throws.InvalidOperationException.With.Message.Contains("OrderBy"));
        Assert.That(() => Merge.OrderBy<Row, long>(r => r.Key).OrderBy(r => r.Shard), Throws.InvalidOperationException.With.Message.Contains("ThenBy"));
        Assert.That(() => Merge.Concat<Row>().Skip(-1), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => Merge.Sum<string>(), Throws.ArgumentException.With.Message.Contains("GroupBy"));
    }
}

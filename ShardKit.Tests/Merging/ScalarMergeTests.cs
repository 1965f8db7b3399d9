namespace ShardKit.Tests.Merging;

public sealed class ScalarMergeTests
{
    [Test]
    public void Sum_adds_across_shards_converting_each_shards_type()
    {
        Assert.That(InMemoryShards.Combine(Merge.Sum<long>(), 3L, 4, (short)5), Is.EqualTo(12L));
        Assert.That(InMemoryShards.Combine(Merge.Sum<decimal>(), 1.25m, 2L), Is.EqualTo(3.25m));
        Assert.That(InMemoryShards.Combine(Merge.Sum<double>(), 0.5d, 1.5f), Is.EqualTo(2d));
    }

    [Test]
    public void Sum_skips_nulls_and_is_null_only_when_every_shard_is()
    {
        Assert.That(InMemoryShards.Combine(Merge.Sum<decimal?>(), null, 2m), Is.EqualTo(2m));
        Assert.That(InMemoryShards.Combine(Merge.Sum<decimal?>(), null, null), Is.Null);
        Assert.That(InMemoryShards.Combine(Merge.Sum<long>(), null, null), Is.Zero);
    }

    [Test]
    public void Integer_sums_that_overflow_throw_instead_of_wrapping()
    {
        Assert.That(() => InMemoryShards.Combine(Merge.Sum<long>(), long.MaxValue, 1L), Throws.InstanceOf<OverflowException>());
    }

    [Test]
    public void Count_adds_counts()
    {
        Assert.That(InMemoryShards.Combine(Merge.Count(), 10L, 0L, 5L), Is.EqualTo(15));
    }

    [Test]
    public void Min_and_max_skip_nulls()
    {
        var early = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        var late = early.AddDays(3);
        Assert.That(InMemoryShards.Combine(Merge.Min<DateTime?>(), late, null, early), Is.EqualTo(early));
        Assert.That(InMemoryShards.Combine(Merge.Max<DateTime?>(), late, null, early), Is.EqualTo(late));
        Assert.That(InMemoryShards.Combine(Merge.Max<DateTime?>(), null, null), Is.Null);
        Assert.That(InMemoryShards.Combine(Merge.Min<string>(), "b", "B", "a"), Is.EqualTo("B"), "text compares ordinally, as COLLATE \"C\"");
    }

    [Test]
    public void Average_is_the_total_sum_over_the_total_count_not_an_average_of_averages()
    {
        // Shard 0: one row of 10; shard 1: three rows summing to 6. The true average is 16 / 4 = 4, not (10 + 2) / 2 = 6.
        var average = InMemoryShards.CombineRows(Merge.Average(), [10m, 1L], [6L, 3L]);
        Assert.That(average, Is.EqualTo(4m));
        Assert.That(InMemoryShards.CombineRows(Merge.Average(), [null, 0L]), Is.Null);
    }

    [TestCase(new[] { "1.00", "2.00", "2.00" }, "1.6666666666666667")]
    [TestCase(new[] { "1", "2", "3" }, "2.0000000000000000")]
    [TestCase(new[] { "10000", "20000" }, "15000.000000000000")]
    [TestCase(new[] { "0.001", "0.002" }, "0.00150000000000000000")]
    [TestCase(new[] { "-1.5", "-2" }, "-1.7500000000000000")]
    [TestCase(new[] { "0.5", "1" }, "0.75000000000000000000")]
    [TestCase(new[] { "123456789012.345", "1" }, "61728394506.67250000")]
    public void Average_has_the_digits_PostgreSQL_avg_shows(string[] values, string expected)
    {
        var rows = values.Select(v => new object?[] { decimal.Parse(v, System.Globalization.CultureInfo.InvariantCulture), 1L }).ToArray();
        var average = InMemoryShards.CombineRows(Merge.Average(), rows);
        Assert.That(average!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(expected));
    }
}

namespace ShardKit.Tests.Configuration;

public sealed class ShardedDataSourceBuilderTests
{
    private const string Cs = "Host=127.0.0.1;Port=5432;Username=app;Password=s3cret-pw";

    private static ShardConfigurationException BuildFails(ShardedDataSourceBuilder builder) =>
        Assert.Throws<ShardConfigurationException>(() => builder.Build())!;

    [Test]
    public void Empty_shard_list_is_rejected()
    {
        var error = BuildFails(new ShardedDataSourceBuilder());
        Assert.That(error.Message, Does.Contain("No shards are configured").And.Contain("AddShard"));
    }

    [Test]
    public void Duplicate_shard_names_are_rejected()
    {
        var error = BuildFails(new ShardedDataSourceBuilder().AddShard("a", Cs).AddShard("a", Cs));
        Assert.That(error.Errors, Has.Some.Contains("'a' appears more than once"));
    }

    [Test]
    public void Malformed_connection_string_is_rejected_without_its_password()
    {
        var error = BuildFails(new ShardedDataSourceBuilder().AddShard("a", "Host=db;Password=s3cret-pw;Port=notanumber"));
        Assert.That(error.Message, Does.Contain("Shard 'a'").And.Contain("malformed"));
        Assert.That(error.ToString(), Does.Not.Contain("s3cret-pw"));
    }

    [Test]
    public void Unknown_keyword_is_rejected_without_the_password()
    {
        var error = BuildFails(new ShardedDataSourceBuilder().AddShard("a", "Host=db;Pasword=s3cret-pw"));
        Assert.That(error.ToString(), Does.Not.Contain("s3cret-pw"));
        Assert.That(error.Message, Does.Contain("malformed"));
    }

    [Test]
    public void Every_error_is_listed_at_once()
    {
        var error = BuildFails(new ShardedDataSourceBuilder().AddShard("a", "").AddShard("a", Cs).AddShard("", Cs).UseHashSharding(0));
        Assert.That(error.Errors, Has.Count.EqualTo(4));
    }

    [TestCase(0)]
    [TestCase(4097)]
    public void Bucket_count_out_of_range_is_rejected(int buckets)
    {
        var error = BuildFails(new ShardedDataSourceBuilder().AddShard("a", Cs).UseHashSharding(buckets));
        Assert.That(error.Message, Does.Contain("Buckets").And.Contain("4096"));
    }

    [Test]
    public void Overlapping_ranges_are_rejected()
    {
        var error = BuildFails(new ShardedDataSourceBuilder().AddShard("a", Cs).AddShard("b", Cs)
            .UseRangeSharding(new ShardRange(0L, 100L, "a"), new ShardRange(50L, 200L, "b")));
        Assert.That(error.Message, Does.Contain("overlap on [50, 100)"));
    }

    [Test]
    public void Gapped_ranges_are_rejected()
    {
        var error = BuildFails(new ShardedDataSourceBuilder().AddShard("a", Cs).AddShard("b", Cs)
            .UseRangeSharding(new ShardRange(0L, 100L, "a"), new ShardRange(150L, 200L, "b")));
        Assert.That(error.Message, Does.Contain("gap between 100 and 150"));
    }

    [Test]
    public void Range_naming_an_unknown_shard_is_rejected()
    {
        var error = BuildFails(new ShardedDataSourceBuilder().AddShard("a", Cs).UseRangeSharding(new ShardRange(null, 10L, "a"), new ShardRange(10L, null, "zz")));
        Assert.That(error.Errors, Has.Some.Contains("'zz'"));
    }

    [Test]
    public void Key_outside_every_range_is_a_routing_error()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("a", Cs).AddShard("b", Cs)
            .UseRangeSharding(new ShardRange(0L, 100L, "a"), new ShardRange(100L, 200L, "b")).Build();
        Assert.That(source.ShardFor(99L), Is.EqualTo("a"));
        Assert.That(source.ShardFor(100L), Is.EqualTo("b"));
        var error = Assert.Throws<ShardRoutingException>(() => source.ShardFor(200L));
        Assert.That(error!.Message, Does.Contain("outside every configured range"));
    }

    [Test]
    public void Open_outer_ranges_cover_every_key()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("a", Cs).AddShard("b", Cs)
            .UseRangeSharding(new ShardRange(100L, null, "b"), new ShardRange(null, 100L, "a")).Build();
        Assert.That(source.ShardFor(long.MinValue), Is.EqualTo("a"));
        Assert.That(source.ShardFor(long.MaxValue), Is.EqualTo("b"));
    }

    [Test]
    public void List_key_not_mapped_and_no_default_is_a_routing_error()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("a", Cs).AddShard("b", Cs)
            .UseListSharding(new Dictionary<ShardKeyValue, string> { ["acme"] = "a", ["globex"] = "b" }).Build();
        Assert.That(source.ShardFor("globex"), Is.EqualTo("b"));
        var error = Assert.Throws<ShardRoutingException>(() => source.ShardFor("initech"));
        Assert.That(error!.Message, Does.Contain("'initech'").And.Contain("default shard"));
    }

    [Test]
    public void List_default_shard_takes_unlisted_keys()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("a", Cs).AddShard("b", Cs)
            .UseListSharding(new Dictionary<ShardKeyValue, string> { ["acme"] = "a" }, defaultShard: "b").Build();
        Assert.That(source.ShardFor("initech"), Is.EqualTo("b"));
    }

    [Test]
    public void Custom_chooser_returning_an_unknown_shard_is_a_routing_error()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("a", Cs).UseCustomSharding(_ => "nowhere").Build();
        var error = Assert.Throws<ShardRoutingException>(() => source.ShardFor(1L));
        Assert.That(error!.Message, Does.Contain("'nowhere'").And.Contain("a"));
    }

    [Test]
    public void Modulo_places_like_the_sqlalchemy_example()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("shard1", Cs).AddShard("shard2", Cs).UseModuloSharding().Build();
        // SQLAlchemy's example: 'shard1' if id % 2 == 0 else 'shard2'.
        Assert.That(source.ShardFor(10L), Is.EqualTo("shard1"));
        Assert.That(source.ShardFor(11L), Is.EqualTo("shard2"));
        Assert.That(source.ShardFor(-3L), Is.EqualTo("shard2"));
    }

    [Test]
    public void Modulo_rejects_string_keys_with_a_fix()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("a", Cs).UseModuloSharding().Build();
        var error = Assert.Throws<ShardRoutingException>(() => source.ShardFor("x"));
        Assert.That(error!.Message, Does.Contain("UseHashSharding"));
    }

    [Test]
    public void Hash_rejects_date_keys_with_a_fix()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("a", Cs).Build();
        var error = Assert.Throws<ShardRoutingException>(() => source.ShardFor(DateTime.UtcNow));
        Assert.That(error!.Message, Does.Contain("UseRangeSharding"));
    }

    [Test]
    public void Unknown_shard_name_is_a_routing_error_listing_the_shards()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("a", Cs).AddShard("b", Cs).Build();
        var error = Assert.Throws<ShardRoutingException>(() => source.GetShardDataSource("c"));
        Assert.That(error!.Message, Does.Contain("'c'").And.Contain("a, b"));
    }

    [Test]
    public void Default_bucket_spread_is_even_and_contiguous()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("a", Cs).AddShard("b", Cs).AddShard("c", Cs).AddShard("d", Cs)
            .UseHashSharding(1024).Build();
        var buckets = source.Map.Buckets!;
        Assert.That(Enumerable.Range(0, 4).Select(s => buckets.BucketsOf(s).Count), Is.All.EqualTo(256));
        Assert.That(buckets.BucketsOf(1)[0], Is.EqualTo(256));
    }
}

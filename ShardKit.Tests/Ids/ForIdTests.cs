
namespace ShardKit.Tests.Ids;

/// <summary>Routing by id alone: no database is needed to choose the shard.</summary>
public sealed class ForIdTests
{
    private static ShardedDataSource Source(Action<ShardedDataSourceBuilder> strategy)
    {
        var builder = new ShardedDataSourceBuilder();
        for (var i = 0; i < 4; i++)
        {
            builder.AddShard($"s{i}", "Host=127.0.0.1;Port=1");
        }

        strategy(builder);
        return builder.Build();
    }

    [Test]
    public async Task An_id_routes_to_the_shard_that_owns_its_keys_bucket()
    {
        using var source = Source(b => b.UseHashSharding(1024));
        await using var db = source.CreateConnection();
        var random = new Random(1024);

        for (var n = 0; n < 2000; n++)
        {
            var key = random.NextInt64();
            var id = ShardId.Compose(random.NextInt64(ShardId.MaxTimestamp), source.Map.BucketOf(key), n & 31, n & 15);
            Assert.That(db.ForId(id).Shard, Is.EqualTo(source.ShardFor(key)), $"key {key}");
        }
    }

    [TestCase(0L)]
    [TestCase(-42L)]
    public async Task An_id_that_is_not_positive_is_refused_with_a_typed_error(long id)
    {
        using var source = Source(b => b.UseHashSharding());
        await using var db = source.CreateConnection();

        var error = Assert.Throws<ShardIdException>(() => db.ForId(id));

        Assert.That(error!.Message, Does.StartWith($"{id} is not a ShardKit id: ids are positive").And.Contain("read from the row"));
    }

    [Test]
    public async Task An_id_made_for_a_map_with_more_buckets_is_refused_and_the_message_says_why()
    {
        using var source = Source(b => b.UseHashSharding(1024));
        await using var db = source.CreateConnection();
        var id = ShardId.Compose(1000, 2000, 1, 1);

        var error = Assert.Throws<ShardIdException>(() => db.ForId(id));

        Assert.That(error!.Message, Is.EqualTo(
            $"Id {id} carries bucket 2000, but this map has only 1024 buckets: it was made for a map with more. " +
            "Read it with the map it was made for, or target its shard with OnShard(name)."));
    }

    [Test]
    public async Task With_other_strategies_the_id_carries_the_shard_index()
    {
        using var source = Source(b => b.UseModuloSharding());
        await using var db = source.CreateConnection();

        Assert.That(Enumerable.Range(0, 4).Select(i => db.ForId(ShardId.Compose(5, i, 0, 0)).Shard), Is.EqualTo(new[] { "s0", "s1", "s2", "s3" }));
        var error = Assert.Throws<ShardIdException>(() => db.ForId(ShardId.Compose(5, 4, 0, 0)));
        Assert.That(error!.Message, Does.Contain("carries shard index 4, but this modulo map has only 4 shards"));
    }
}

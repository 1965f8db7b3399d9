
namespace ShardKit.Tests.Ids;

/// <summary>Ids made in the application carry the bucket the data source's map gives their key.</summary>
public sealed class ShardIdGeneratorTests
{
    public sealed class Order
    {
        [ShardKey] public long CustomerId { get; init; }
    }

    [Test]
    public async Task Ids_for_keys_and_entities_carry_the_hash_bucket_of_their_key_and_route_back_to_its_shard()
    {
        await using var ctx = await IdShards.WithWorkerTableAsync();
        await using var generator = await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx));
        ShardKeyValue[] keys = [42L, -7, (short)3, "acme", "zürich", Guid.Parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")];

        foreach (var key in keys)
        {
            var parts = ShardId.Decode(generator.NextId(key));
            Assert.That((parts.Bucket, parts.Worker, parts.Source), Is.EqualTo((ctx.Source.Map.BucketOf(key), generator.Worker, ShardIdSource.Application)), $"key {key}");
        }

        var order = new Order { CustomerId = 1_234_567 };
        var id = generator.NextIdFor(order);
        Assert.That(ShardId.BucketOf(id), Is.EqualTo(ctx.Source.Map.BucketOf(order.CustomerId)));
        await using var db = ctx.Source.CreateConnection();
        Assert.That(db.ForId(id).Shard, Is.EqualTo(ctx.Source.ShardFor(order.CustomerId)));
        Assert.That(ctx.Source.ShardForId(id), Is.EqualTo(ctx.Source.ShardFor(order.CustomerId)));
    }

    [Test]
    public async Task With_modulo_sharding_ids_carry_the_shard_index()
    {
        await using var ctx = await IdShards.WithWorkerTableAsync(configure: b => b.UseModuloSharding());
        await using var generator = await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx));

        for (var key = -5L; key < 20; key++)
        {
            var id = generator.NextId(key);
            Assert.That(ShardId.BucketOf(id), Is.EqualTo((int)(((key % ctx.Shards.Count) + ctx.Shards.Count) % ctx.Shards.Count)));
            Assert.That(ctx.Source.ShardForId(id), Is.EqualTo(ctx.Source.ShardFor(key)));
        }

        Assert.Throws<ShardIdException>(() => generator.NextIdForBucket(ctx.Shards.Count));
    }

    [Test]
    public async Task A_bucket_outside_the_map_is_refused_with_a_typed_error()
    {
        await using var ctx = await IdShards.WithWorkerTableAsync(configure: b => b.UseHashSharding(256));
        await using var generator = await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx));

        var error = Assert.Throws<ShardIdException>(() => generator.NextIdForBucket(256));

        Assert.That(error!.Message, Does.StartWith("Bucket 256 is outside 0..255"));
        Assert.That(ShardId.BucketOf(generator.NextIdForBucket(255)), Is.EqualTo(255));
    }
}


namespace ShardKit.Tests.Ids;

public sealed class ShardIdLayoutTests
{
    [Test]
    public void Every_field_at_its_limit_round_trips_and_the_id_stays_positive()
    {
        var id = ShardId.Compose(ShardId.MaxTimestamp, 4095, 31, 15);

        Assert.That(id, Is.EqualTo(long.MaxValue & ~(1L << 9)), "every bit but the sign and source bits");
        Assert.That(ShardId.Decode(id), Is.EqualTo(new ShardIdParts(ShardId.MaxTime, 4095, ShardIdSource.Application, 31, 15)));
    }

    [Test]
    public void The_range_runs_from_2025_for_69_years()
    {
        Assert.That(ShardId.Epoch, Is.EqualTo(new DateTimeOffset(2025, 1, 1, 0, 0, 0, TimeSpan.Zero)));
        Assert.That(ShardId.MaxTime, Is.EqualTo(new DateTimeOffset(2094, 9, 7, 15, 47, 35, 551, TimeSpan.Zero)));
    }

    [Test]
    public void Ids_order_by_time_before_bucket_worker_and_sequence()
    {
        var earlier = ShardId.Compose(1000, 4095, 31, 15);
        var later = ShardId.Compose(1001, 0, 0, 0);

        Assert.That(later, Is.GreaterThan(earlier));
    }

    [Test]
    public void A_database_id_decodes_with_its_nine_bit_sequence_and_no_worker()
    {
        var ms = (long)TimeSpan.FromDays(400).TotalMilliseconds;
        var id = (ms << 22) | (1234L << 10) | (1L << 9) | 511;

        var parts = ShardId.Decode(id);

        Assert.That(parts, Is.EqualTo(new ShardIdParts(ShardId.Epoch.AddDays(400), 1234, ShardIdSource.Database, null, 511)));
        Assert.That(ShardId.BucketOf(id), Is.EqualTo(1234));
    }

    [TestCase(0L)]
    [TestCase(-1L)]
    [TestCase(long.MinValue)]
    public void Ids_that_are_not_positive_are_refused_with_a_typed_error(long id)
    {
        var error = Assert.Throws<ShardIdException>(() => ShardId.Decode(id));
        Assert.That(error!.Message, Does.Contain($"{id} is not a ShardKit id: ids are positive"));
        Assert.Throws<ShardIdException>(() => ShardId.BucketOf(id));
    }

    [Test]
    public void MinIdAt_separates_the_ids_before_a_moment_from_those_at_or_after_it()
    {
        var moment = new DateTimeOffset(2026, 5, 1, 12, 0, 0, TimeSpan.Zero);
        var ms = moment.ToUnixTimeMilliseconds() - ShardId.EpochUnixMilliseconds;
        var bound = ShardId.MinIdAt(moment);

        Assert.That(ShardId.Compose(ms - 1, 4095, 31, 15), Is.LessThan(bound));
        Assert.That(ShardId.Compose(ms, 0, 0, 0), Is.EqualTo(bound));
        Assert.Throws<ShardIdException>(() => ShardId.MinIdAt(ShardId.Epoch.AddTicks(-1)));
    }
}

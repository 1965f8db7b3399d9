namespace ShardKit.Tests.Keys;

public sealed class ShardKeyValueTests
{
    [Test]
    public void Integers_of_every_width_are_the_same_key()
    {
        Assert.That((ShardKeyValue)42, Is.EqualTo((ShardKeyValue)42L));
        Assert.That((ShardKeyValue)(short)42, Is.EqualTo((ShardKeyValue)42L));
        Assert.That(ShardKeyValue.FromObject(42).GetHashCode(), Is.EqualTo(ShardKeyValue.FromObject(42L).GetHashCode()));
    }

    [Test]
    public void Values_round_trip_through_their_kind()
    {
        var guid = Guid.NewGuid();
        var when = new DateTime(2026, 11, 23, 10, 0, 0, DateTimeKind.Utc);
        Assert.That(((ShardKeyValue)guid).Guid, Is.EqualTo(guid));
        Assert.That(((ShardKeyValue)"acme").String, Is.EqualTo("acme"));
        Assert.That(((ShardKeyValue)when).DateTime, Is.EqualTo(when));
        Assert.That(((ShardKeyValue)when).DateTime.Kind, Is.EqualTo(DateTimeKind.Utc));
        Assert.That(((ShardKeyValue)new DateTimeOffset(2026, 1, 1, 5, 0, 0, TimeSpan.FromHours(5))).DateTimeOffset,
            Is.EqualTo(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero)));
    }

    [Test]
    public void Null_key_is_a_routing_error_that_names_the_fix()
    {
        var error = Assert.Throws<ShardRoutingException>(() => ShardKeyValue.FromObject(null));
        Assert.That(error!.Message, Does.Contain("null").And.Contain("OnShard"));
    }

    [Test]
    public void Unsupported_key_type_is_a_routing_error_that_lists_the_supported_types()
    {
        var error = Assert.Throws<ShardRoutingException>(() => ShardKeyValue.FromObject(3.14));
        Assert.That(error!.Message, Does.Contain("Double").And.Contain("long").And.Contain("Guid"));
    }

    [Test]
    public void Keys_of_different_kinds_are_never_equal_and_cannot_be_ordered()
    {
        Assert.That((ShardKeyValue)"1", Is.Not.EqualTo((ShardKeyValue)1L));
        Assert.Throws<ShardRoutingException>(() => ((ShardKeyValue)"1").CompareTo(1L));
    }
}

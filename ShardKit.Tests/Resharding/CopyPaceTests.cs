namespace ShardKit.Tests.Resharding;

public sealed class CopyPaceTests
{
    [Test]
    public void Rows_wait_for_their_slots_on_one_timeline_shared_by_every_scan()
    {
        var time = new ManualTime();
        var pace = new CopyPace(1000, time);

        Assert.That(pace.Step, Is.EqualTo(50), "a twentieth of a second's rows between looks");
        Assert.That(pace.Take(100), Is.EqualTo(TimeSpan.FromMilliseconds(100)));
        // A second scan's rows queue behind the first's.
        Assert.That(pace.Take(100), Is.EqualTo(TimeSpan.FromMilliseconds(200)));
        time.Advance(TimeSpan.FromMilliseconds(200));
        Assert.That(pace.Take(500), Is.EqualTo(TimeSpan.FromMilliseconds(500)));
    }

    [Test]
    public void Time_the_copy_fell_behind_is_credited_only_up_to_the_limit()
    {
        var time = new ManualTime();
        var pace = new CopyPace(1000, time);

        time.Advance(TimeSpan.FromSeconds(10)); // a slow stretch: 10 s without a row
        // Only MostCredit (100 ms) of it counts: 100 rows go at once, the next 900 wait their 900 ms, not 0.
        Assert.That(pace.Take(100), Is.EqualTo(TimeSpan.Zero));
        Assert.That(pace.Take(900), Is.EqualTo(TimeSpan.FromMilliseconds(900)));
    }

    [Test]
    public void A_slow_pace_looks_after_every_row_and_waits_under_a_millisecond_are_not_taken()
    {
        var time = new ManualTime();
        Assert.That(new CopyPace(5, time).Step, Is.EqualTo(1));
        Assert.That(new CopyPace(1_000_000, time).Step, Is.EqualTo(256));
        var fast = new CopyPace(1_000_000, time);
        Assert.That(fast.Take(500), Is.EqualTo(TimeSpan.Zero), "0.5 ms ahead: no timer");
        Assert.That(fast.Take(600), Is.EqualTo(TimeSpan.FromMilliseconds(1.1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new CopyPace(0, time));
    }

    private sealed class ManualTime : TimeProvider
    {
        private long _now = 1_000_000_000;

        public override long TimestampFrequency => 1_000_000_000;

        public override long GetTimestamp() => _now;

        public void Advance(TimeSpan by) => _now += (long)(by.TotalSeconds * TimestampFrequency);
    }
}

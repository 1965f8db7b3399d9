
namespace ShardKit.Tests.Ids;

/// <summary>The generator's clock and sequence rules, on a hand-set clock: no database, no sleeping.</summary>
public sealed class IdSequencerTests
{
    private static readonly DateTimeOffset T0 = new(2026, 3, 1, 9, 0, 0, TimeSpan.Zero);
    private static readonly long T0Ms = T0.ToUnixTimeMilliseconds() - ShardId.EpochUnixMilliseconds;

    private static IdSequencer Sequencer(TimeProvider clock, long runAhead = 1000, long stepBack = 5000, long floor = 0,
        long leaseEnd = ShardId.MaxTimestamp, int buckets = 1024) =>
        new(worker: 7, buckets, floor, leaseEnd, clock, runAhead, stepBack, end => new ShardIdLeaseException($"lease ended at {end}"));

    [Test]
    public void Sixteen_ids_share_a_millisecond_and_the_seventeenth_borrows_the_next()
    {
        var sequencer = Sequencer(new ManualClock(T0));

        var parts = Enumerable.Range(0, 17).Select(_ => ShardId.Decode(sequencer.Next(3))).ToList();

        Assert.That(parts.Take(16).Select(p => (p.Timestamp, p.Sequence)), Is.EqualTo(Enumerable.Range(0, 16).Select(s => (T0, s))));
        Assert.That((parts[16].Timestamp, parts[16].Sequence), Is.EqualTo((T0.AddMilliseconds(1), 0)));
        Assert.That(parts, Has.All.Matches<ShardIdParts>(p => p is { Bucket: 3, Worker: 7, Source: ShardIdSource.Application }));
    }

    [Test]
    public void Each_bucket_has_its_own_sequence()
    {
        var sequencer = Sequencer(new ManualClock(T0));

        var a = ShardId.Decode(sequencer.Next(1));
        var b = ShardId.Decode(sequencer.Next(2));

        Assert.That((a.Sequence, b.Sequence, a.Timestamp, b.Timestamp), Is.EqualTo((0, 0, T0, T0)));
    }

    [Test]
    public async Task A_burst_runs_ahead_of_a_still_clock_up_to_MaxRunAhead_then_waits_for_it()
    {
        var clock = new ManualClock(T0);
        var sequencer = Sequencer(clock, runAhead: 2);
        var burst = Enumerable.Range(0, 48).Select(_ => sequencer.Next(5)).ToList();
        Assert.That(ShardId.Decode(burst[^1]).Timestamp, Is.EqualTo(T0.AddMilliseconds(2)));

        var reads = clock.Reads;
        var waiting = Task.Run(() => sequencer.Next(5));
        await clock.ReadAtLeastAsync(reads, 5);
        Assert.That(waiting.IsCompleted, Is.False, "the 49th id needs T0+3ms, more than 2 ms ahead of a clock reading T0");

        clock.Now = T0.AddMilliseconds(1);
        var id = await waiting.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.That(ShardId.Decode(id).Timestamp, Is.EqualTo(T0.AddMilliseconds(3)));
        Assert.That(burst.Append(id), Is.Ordered.Ascending.And.Unique);
    }

    [Test]
    public void After_a_small_step_back_each_bucket_keeps_increasing_and_unused_buckets_take_the_clock()
    {
        var clock = new ManualClock(T0);
        var sequencer = Sequencer(clock);
        var before = sequencer.Next(9);

        clock.Now = T0.AddMilliseconds(-500);
        var after = sequencer.Next(9);
        var fresh = sequencer.Next(10);

        Assert.That(after, Is.GreaterThan(before));
        Assert.That((ShardId.Decode(after).Timestamp, ShardId.Decode(after).Sequence), Is.EqualTo((T0, 1)));
        Assert.That(ShardId.Decode(fresh).Timestamp, Is.EqualTo(T0.AddMilliseconds(-500)));
    }

    [Test]
    public async Task A_step_back_beyond_MaxRunAhead_but_within_MaxClockStepBack_is_waited_out()
    {
        var clock = new ManualClock(T0);
        var sequencer = Sequencer(clock, runAhead: 1000, stepBack: 5000);
        var before = sequencer.Next(9);
        clock.Now = T0.AddSeconds(-3);

        var reads = clock.Reads;
        var waiting = Task.Run(() => sequencer.Next(9));
        await clock.ReadAtLeastAsync(reads, 5);
        Assert.That(waiting.IsCompleted, Is.False, "3 s behind is more than the 1 s a bucket may run ahead");

        clock.Now = T0.AddSeconds(-1);
        var after = await waiting.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.That(after, Is.GreaterThan(before));
        Assert.That(ShardId.Decode(after).Timestamp, Is.EqualTo(T0));
    }

    [Test]
    public void A_step_back_beyond_MaxClockStepBack_throws_a_clock_exception_that_says_what_to_check()
    {
        var clock = new ManualClock(T0);
        var sequencer = Sequencer(clock, runAhead: 1000, stepBack: 5000);
        sequencer.Next(9);
        clock.Now = T0.AddSeconds(-6);

        var error = Assert.Throws<ShardIdClockException>(() => sequencer.Next(9));

        Assert.That(error!.Message, Does.Contain("The clock stepped back").And.Contain("6000 ms before the ids already issued for bucket 9")
            .And.Contain("time synchronisation").And.Contain("MaxClockStepBack (5000 ms)"));
        Assert.That(sequencer.Next(10), Is.Positive, "a bucket with no later ids is not held back");
    }

    [Test]
    public void A_clock_before_2025_throws_a_clock_exception()
    {
        var sequencer = Sequencer(new ManualClock(new DateTimeOffset(2024, 12, 31, 23, 59, 59, TimeSpan.Zero)));

        var error = Assert.Throws<ShardIdClockException>(() => sequencer.Next(0));

        Assert.That(error!.Message, Does.Contain("outside the time ShardKit ids can carry").And.Contain("UseTimeProvider"));
    }

    [Test]
    public void No_id_is_stamped_after_the_lease_end()
    {
        var clock = new ManualClock(T0);
        var sequencer = Sequencer(clock, leaseEnd: T0Ms);
        var ids = Enumerable.Range(0, 16).Select(_ => sequencer.Next(1)).ToList();

        Assert.That(() => sequencer.Next(1), Throws.TypeOf<ShardIdLeaseException>().With.Message.EqualTo($"lease ended at {T0Ms}"),
            "the 17th id would be stamped T0+1ms, after the lease");
        clock.Now = T0.AddMilliseconds(1);
        Assert.Throws<ShardIdLeaseException>(() => sequencer.Next(2));

        sequencer.LeaseEnd = T0Ms + 10;
        Assert.That(sequencer.Next(1), Is.GreaterThan(ids[^1]), "a renewal lets ids resume");
    }

    [Test]
    public void The_first_id_of_a_worker_is_stamped_after_its_previous_holder_even_if_the_clock_is_behind()
    {
        var sequencer = Sequencer(new ManualClock(T0), floor: T0Ms + 40);

        Assert.That(ShardId.Decode(sequencer.Next(4)).Timestamp, Is.EqualTo(T0.AddMilliseconds(40)));
        Assert.That(sequencer.HighestIssued(), Is.EqualTo(T0Ms + 40));
    }

    [TestCase(-1)]
    [TestCase(1024)]
    public void A_bucket_outside_the_map_is_refused_with_a_typed_error(int bucket)
    {
        var sequencer = Sequencer(new ManualClock(T0));

        var error = Assert.Throws<ShardIdException>(() => sequencer.Next(bucket));

        Assert.That(error!.Message, Does.StartWith($"Bucket {bucket} is outside 0..1023").And.Contain("NextId(key)"));
    }

    [Test]
    public void Threads_racing_on_a_few_buckets_never_share_an_id()
    {
        // The clock moves 10 µs per read: ~25 ids per bucket and millisecond, so buckets fill their milliseconds and run ahead.
        var sequencer = Sequencer(new ManualClock(T0, TimeSpan.FromTicks(100)));
        const int Threads = 8, PerThread = 50_000;
        var ids = new long[Threads][];

        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, t =>
        {
            var mine = ids[t] = new long[PerThread];
            for (var i = 0; i < PerThread; i++)
            {
                mine[i] = sequencer.Next(i & 3);
            }
        });

        var all = ids.SelectMany(x => x).ToList();
        Assert.That(all.Distinct().Count(), Is.EqualTo(Threads * PerThread));
        Assert.That(ids.Select(mine => mine.Where((_, i) => (i & 3) == 0)), Has.All.Ordered.Ascending, "per thread and bucket, ids increase");
    }
}

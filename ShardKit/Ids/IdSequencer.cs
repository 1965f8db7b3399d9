namespace ShardKit;

/// <summary>
/// The lock-free heart of a generator: one 64-bit slot per bucket holding <c>(millisecond &lt;&lt; 4) | sequence</c> of
/// the last id issued for that bucket. An id is <c>max(now &lt;&lt; 4, last + 1)</c> installed with one
/// compare-and-swap, so each bucket's ids strictly increase whatever the clock does, and a full millisecond rolls into
/// the next one by the same addition. No locks, no allocation.
/// </summary>
internal sealed class IdSequencer
{
    private const int SequenceBits = ShardId.AppSequenceBits;

    private readonly long[] _slots;
    private readonly TimeProvider _time;
    private readonly long _maxRunAhead;
    private readonly long _maxStepBack;
    private readonly Func<long, Exception> _leaseEnded;
    private long _leaseEnd;

    /// <param name="worker">The leased worker number.</param>
    /// <param name="buckets">How many buckets ids may carry.</param>
    /// <param name="floor">The first millisecond this worker may stamp: after every id of its previous holder.</param>
    /// <param name="leaseEnd">The last millisecond this worker may stamp until the lease is renewed.</param>
    /// <param name="time">The clock.</param>
    /// <param name="maxRunAhead">Milliseconds a bucket may run ahead of the clock before waiting.</param>
    /// <param name="maxStepBack">Milliseconds of clock step-back waited out before throwing.</param>
    /// <param name="leaseEnded">Builds the error for an id that would be stamped after <paramref name="leaseEnd"/>.</param>
    public IdSequencer(int worker, int buckets, long floor, long leaseEnd, TimeProvider time, long maxRunAhead, long maxStepBack,
        Func<long, Exception> leaseEnded)
    {
        Worker = worker;
        _time = time;
        _maxRunAhead = maxRunAhead;
        _maxStepBack = maxStepBack;
        _leaseEnded = leaseEnded;
        _leaseEnd = Math.Min(leaseEnd, ShardId.MaxTimestamp);

        // As if the last id of floor - 1 had used the whole millisecond: the next one is stamped floor or later.
        _slots = new long[buckets];
        Array.Fill(_slots, ((floor - 1) << SequenceBits) | ShardId.AppSequenceMask);
    }

    public int Worker { get; }

    public int BucketCount => _slots.Length;

    /// <summary>The last millisecond ids may be stamped with; raised by renewals, lowered to stop issuing.</summary>
    public long LeaseEnd
    {
        get => Volatile.Read(ref _leaseEnd);
        set => Volatile.Write(ref _leaseEnd, Math.Min(value, ShardId.MaxTimestamp));
    }

    public long Next(int bucket)
    {
        if ((uint)bucket >= (uint)_slots.Length)
        {
            throw BucketOutOfRange(bucket);
        }

        ref var slot = ref _slots[bucket];
        while (true)
        {
            // The slot before the clock: whoever wrote the slot read the clock earlier, so a stale reading here can
            // never look like the clock stepping back.
            var last = Volatile.Read(ref slot);
            var now = Now();
            var next = Math.Max(now << SequenceBits, last + 1);
            var ms = next >> SequenceBits;
            if (ms - now > _maxRunAhead || ms > LeaseEnd)
            {
                WaitOrThrow(bucket, ms, now);
                continue;
            }

            if (Interlocked.CompareExchange(ref slot, next, last) == last)
            {
                return ShardId.Compose(ms, bucket, Worker, (int)(next & ShardId.AppSequenceMask));
            }
        }
    }

    /// <summary>The latest millisecond any issued id carries (or floor - 1 when none was issued).</summary>
    public long HighestIssued()
    {
        var highest = long.MinValue;
        foreach (var slot in _slots)
        {
            highest = Math.Max(highest, Volatile.Read(in slot) >> SequenceBits);
        }

        return highest;
    }

    internal long Now()
    {
        var now = _time.GetUtcNow();
        var ms = now.ToUnixTimeMilliseconds() - ShardId.EpochUnixMilliseconds;
        return ms is >= 0 and <= ShardId.MaxTimestamp
            ? ms
            : throw new ShardIdClockException(
                $"The clock reads {now:O}, outside the time ShardKit ids can carry ({ShardId.Epoch:O} to {ShardId.MaxTime:O}). " +
                "Check the machine's clock, or the TimeProvider given to UseTimeProvider.");
    }

    private void WaitOrThrow(int bucket, long ms, long now)
    {
        if (ms > LeaseEnd)
        {
            throw _leaseEnded(LeaseEnd);
        }

        var ahead = ms - now;
        if (ahead > _maxStepBack)
        {
            throw new ShardIdClockException(
                $"The clock stepped back: it reads {ShardId.Epoch.AddMilliseconds(now):O}, {ahead} ms before the ids already " +
                $"issued for bucket {bucket}, more than MaxClockStepBack ({_maxStepBack} ms) allows to wait out. Check the " +
                "machine's time synchronisation; ids for this bucket resume once the clock catches up, or raise MaxClockStepBack.");
        }

        // Sleep while the clock is clearly behind, spin through the last millisecond.
        if (ahead - _maxRunAhead > 1)
        {
            Thread.Sleep(1);
        }
        else
        {
            Thread.Yield();
        }
    }

    private ShardIdException BucketOutOfRange(int bucket) => new(
        $"Bucket {bucket} is outside 0..{_slots.Length - 1}, the buckets of this shard map. Pass ShardMap.BucketOf(key), " +
        "or call NextId(key) and let the generator find the bucket.");
}

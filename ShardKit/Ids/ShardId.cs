namespace ShardKit;

/// <summary>
/// The layout of a ShardKit id: a positive 63-bit <see cref="long"/> (a PostgreSQL <c>bigint</c>) that is ordered by
/// time and carries the bucket of its row's shard key, so the row's shard is known from the id alone.
/// </summary>
/// <remarks>
/// <code>
///  63 | 62 ........ 22 | 21 ..... 10 |   9    | 8 ......... 0
///   0 | milliseconds   | bucket      | source | app: worker (5) + sequence (4)
///     | since 2025-01-01 UTC (41)    | (12)   | db:  sequence (9)
/// </code>
/// <list type="bullet">
/// <item>The sign bit is always 0: 41 bits of milliseconds last until 2094-09-07 and then fail loudly, where
/// Instagram's 41 + 13 + 10 = 64-bit layout turns negative after 34.8 years.</item>
/// <item>12 bucket bits hold every hash bucket (<see cref="BucketMap.MaxBuckets"/> = 4096); with other strategies they
/// hold the shard index.</item>
/// <item>The source bit keeps application ids and database ids apart, so neither side has to know the other's
/// counters.</item>
/// <item>Application ids: 32 leased workers (processes) × 16 ids per millisecond per bucket each, i.e. 16,000 ids/s per
/// hot key and 16,000 × buckets ids/s per process (16.4 million/s with 1024 buckets), bursts beyond that borrowing a
/// little time ahead of the clock. Database ids: 512 ids per millisecond per shard.</item>
/// </list>
/// </remarks>
public static class ShardId
{
    /// <summary>Bits of the millisecond timestamp: 2^41 ms is 69.7 years.</summary>
    public const int TimestampBits = 41;

    /// <summary>Bits of the bucket: 4096 buckets, <see cref="BucketMap.MaxBuckets"/>.</summary>
    public const int BucketBits = 12;

    /// <summary>Bits of the worker number of application ids: 32 workers.</summary>
    public const int WorkerBits = 5;

    /// <summary>Bits of the per-worker, per-bucket, per-millisecond sequence of application ids: 16 ids.</summary>
    public const int AppSequenceBits = 4;

    /// <summary>Bits of the per-shard sequence of database ids: 512 ids per millisecond.</summary>
    public const int DatabaseSequenceBits = 9;

    /// <summary>The number of worker numbers application generators lease.</summary>
    public const int WorkerCount = 1 << WorkerBits;

    /// <summary>The largest millisecond offset from <see cref="Epoch"/> an id can carry.</summary>
    public const long MaxTimestamp = (1L << TimestampBits) - 1;

    /// <summary>Milliseconds from the Unix epoch to <see cref="Epoch"/>.</summary>
    public const long EpochUnixMilliseconds = 1_735_689_600_000;

    internal const int SourceShift = AppSequenceBits + WorkerBits;
    internal const int BucketShift = SourceShift + 1;
    internal const int TimestampShift = BucketShift + BucketBits;
    internal const long AppSequenceMask = (1L << AppSequenceBits) - 1;
    internal const long WorkerMask = (1L << WorkerBits) - 1;
    internal const long DatabaseSequenceMask = (1L << DatabaseSequenceBits) - 1;
    internal const long BucketMask = (1L << BucketBits) - 1;

    /// <summary>The moment ids count milliseconds from: 2025-01-01T00:00:00Z.</summary>
    public static DateTimeOffset Epoch { get; } = DateTimeOffset.FromUnixTimeMilliseconds(EpochUnixMilliseconds);

    /// <summary>The last moment an id can carry (2094-09-07); generators fail with <see cref="ShardIdClockException"/> after it.</summary>
    public static DateTimeOffset MaxTime { get; } = DateTimeOffset.FromUnixTimeMilliseconds(EpochUnixMilliseconds + MaxTimestamp);

    /// <summary>Splits an id into its fields; throws <see cref="ShardIdException"/> when <paramref name="id"/> is not positive.</summary>
    public static ShardIdParts Decode(long id)
    {
        ThrowIfInvalid(id);
        var source = (ShardIdSource)((id >> SourceShift) & 1);
        return new ShardIdParts(
            Epoch.AddMilliseconds(id >> TimestampShift),
            BucketOf(id),
            source,
            source == ShardIdSource.Application ? (int)((id >> AppSequenceBits) & WorkerMask) : null,
            (int)(id & (source == ShardIdSource.Application ? AppSequenceMask : DatabaseSequenceMask)));
    }

    /// <summary>The bucket (or shard index, for strategies other than hash) an id carries.</summary>
    public static int BucketOf(long id)
    {
        ThrowIfInvalid(id);
        return (int)((id >> BucketShift) & BucketMask);
    }

    /// <summary>
    /// The smallest id of <paramref name="time"/>'s millisecond, for range scans by time (<c>where id &gt;= @from</c>);
    /// ids are ordered by time first, so every id made at or after <paramref name="time"/> is at least this.
    /// </summary>
    public static long MinIdAt(DateTimeOffset time)
    {
        var ms = time.ToUnixTimeMilliseconds() - EpochUnixMilliseconds;
        return ms is >= 0 and <= MaxTimestamp
            ? ms << TimestampShift
            : throw new ShardIdException($"{time:O} is outside the id time range {Epoch:O} to {MaxTime:O}.");
    }

    internal static long Compose(long timestamp, int bucket, int worker, int sequence) =>
        (timestamp << TimestampShift) | ((long)bucket << BucketShift) | ((long)worker << AppSequenceBits) | (uint)sequence;

    internal static void ThrowIfInvalid(long id)
    {
        if (id <= 0)
        {
            throw new ShardIdException(
                $"{id} is not a ShardKit id: ids are positive. Pass the id read from the row, not a default or a negated value.");
        }
    }
}

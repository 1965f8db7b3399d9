namespace ShardKit;

/// <summary>Where one command goes: a single shard, or several shards each with its own share of the parameters.</summary>
internal readonly struct Route
{
    private Route(int shard, RoutePart[]? parts, IReadOnlyList<object>? keys = null, ShardKeyValue key = default, int? bucket = null)
    {
        Shard = shard;
        Parts = parts;
        Keys = keys;
        Key = key;
        Bucket = bucket;
    }

    /// <summary>The shard of a single-shard route; -1 for a split.</summary>
    public int Shard { get; }

    /// <summary>The per-shard parts of a split route (possibly empty: an empty key list reaches no shard).</summary>
    public RoutePart[]? Parts { get; }

    public bool IsSingle => Parts is null;

    /// <summary>The keys of a list that all fell on one shard (a write names their buckets to the fence); else null.</summary>
    public IReadOnlyList<object>? Keys { get; }

    public static Route To(int shard) => new(shard, null);

    /// <summary>The one key that placed a single-shard route (kind None when it came from a list, or no key).</summary>
    public ShardKeyValue Key { get; }

    public static Route To(int shard, IReadOnlyList<object> keys) => new(shard, null, keys);

    public static Route To(int shard, ShardKeyValue key) => new(shard, null, key: key);

    /// <summary>The hash bucket that placed a single-shard route directly (an id's, see <c>ForId</c>); else null.</summary>
    public int? Bucket { get; }

    public static Route ToBucket(int shard, int bucket) => new(shard, null, bucket: bucket);

    public static Route Split(RoutePart[] parts) => new(-1, parts);

    /// <summary>This single-shard route, with its keys, sent to <paramref name="shard"/> instead.</summary>
    public Route On(int shard) => new(shard, null, Keys, Key, Bucket);
}

/// <summary>
/// One shard's share of a split command: its shard and the parameters that carry only its keys; for a list of keyed
/// items also the items with their indexes in the caller's list, so a write can pipeline them and name a failing one;
/// for a list of keys, the part's keys (to route them again if their buckets move).
/// </summary>
internal readonly record struct RoutePart(int Shard, object? Parameters, BatchGroup? Batch = null, Array? Keys = null);

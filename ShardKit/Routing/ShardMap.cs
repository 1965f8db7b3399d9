namespace ShardKit;

/// <summary>
/// A frozen shard map: the shards in order and the strategy that places keys on them. Built and validated by
/// <see cref="ShardedDataSourceBuilder"/> or from <see cref="ShardKitOptions"/>; never changes afterwards. A data source
/// with a stored map (<see cref="ShardedDataSourceBuilder.UseStoredMap"/>) replaces its map by a newer one (a higher
/// <see cref="Epoch"/>) when buckets move; each command routes by the map it started with.
/// </summary>
public sealed class ShardMap
{
    private readonly Dictionary<string, int> _indexByName;

    private readonly HashSet<int>? _moving;

    internal ShardMap(IReadOnlyList<ShardInfo> shards, IShardingStrategy strategy, long epoch = 0, IReadOnlyCollection<int>? moving = null,
        MapTables? tables = null)
    {
        Shards = shards;
        Strategy = strategy;
        Epoch = epoch;
        _moving = moving is { Count: > 0 } ? [.. moving] : null;
        Tables = tables ?? MapTables.None;
        _indexByName = shards.ToDictionary(s => s.Name, s => s.Index, StringComparer.Ordinal);
        ShardNames = shards.Select(s => s.Name).ToArray();
    }

    /// <summary>The stored map's epoch (raised by one with every bucket switch); 0 for a map from options.</summary>
    public long Epoch { get; }

    /// <summary>The shard names in configured order.</summary>
    public IReadOnlyList<string> ShardNames { get; }

    /// <summary>The placement strategy's name: hash, modulo, range, list or custom.</summary>
    public string StrategyName => Strategy.Name;

    /// <summary>The bucket map when the strategy is hash; otherwise null.</summary>
    public BucketMap? Buckets => (Strategy as HashShardingStrategy)?.Buckets;

    internal IReadOnlyList<ShardInfo> Shards { get; }

    internal IShardingStrategy Strategy { get; }

    /// <summary>The name of the shard that owns <paramref name="key"/>.</summary>
    public string ShardFor(ShardKeyValue key) => ShardNames[Strategy.ShardOf(key)];

    /// <summary>The hash bucket of <paramref name="key"/>; throws when the strategy is not hash.</summary>
    public int BucketOf(ShardKeyValue key) => Strategy is HashShardingStrategy hash
        ? hash.BucketOf(key)
        : throw new InvalidOperationException($"Buckets exist only with hash sharding; this map uses {Strategy.Name}.");

    /// <summary>The same shards with the buckets placed as <paramref name="owners"/> says (shard index per bucket).</summary>
    internal ShardMap WithOwners(int[] owners, long epoch, IReadOnlyCollection<int> moving, MapTables? tables = null) =>
        new(Shards, new HashShardingStrategy(new BucketMap(owners)), epoch, moving, tables);

    /// <summary>The tables whose rows move with their buckets, and their key columns (the catalog's <c>map_table</c>).</summary>
    internal MapTables Tables { get; }

    /// <summary>
    /// A bucket move is under way: rows of a moving bucket may sit on two shards (the owner's, and a copy the other
    /// holds before the switch or until its cleanup), so a fan-out keeps from each shard only the rows it owns.
    /// </summary>
    internal bool MovesInFlight => _moving is not null;

    /// <summary>
    /// Whether one of <paramref name="buckets"/> belongs to a move under way by this map: a read of it by key names it to
    /// the shard's fence, so a read sent by a map older than the switch is refused rather than reading the old owner's
    /// copies (or, after the move's cleanup, none).
    /// </summary>
    internal bool AnyMoving(int[] buckets) => _moving is { } moving && Array.Exists(buckets, moving.Contains);

    /// <summary>Whether <paramref name="shard"/> owns <paramref name="key"/>'s row by this map.</summary>
    internal bool Owns(int shard, in ShardKeyValue key) => key.Kind == ShardKeyKind.None || Strategy.ShardOf(key) == shard;

    internal bool Contains(string shardName) => _indexByName.ContainsKey(shardName);

    internal int IndexOf(string shardName) => _indexByName.TryGetValue(shardName, out var index)
        ? index
        : throw new ShardRoutingException(
            $"There is no shard named '{shardName}'; the configured shards are: {string.Join(", ", ShardNames)}.");
}

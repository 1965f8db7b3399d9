namespace ShardKit;

/// <summary>
/// ShardKit's settings as bound from configuration (a <c>ShardKit</c> section). Validated by
/// <see cref="ShardKitOptionsValidator"/>; <see cref="ShardedDataSourceBuilder"/> produces the same map in code.
/// </summary>
public sealed class ShardKitOptions
{
    /// <summary>The default configuration section name.</summary>
    public const string SectionName = "ShardKit";

    /// <summary>The shards, in order (order matters for modulo placement and the default bucket spread).</summary>
    public IList<ShardOptions> Shards { get; } = new List<ShardOptions>();

    /// <summary>The placement strategy; <see cref="ShardingStrategyKind.Hash"/> by default.</summary>
    public ShardingStrategyKind Strategy { get; set; } = ShardingStrategyKind.Hash;

    /// <summary>Hash buckets (1 to <see cref="BucketMap.MaxBuckets"/>), at least one per shard; 1024 by default.</summary>
    public int Buckets { get; set; } = 1024;

    /// <summary>How range bounds and list keys written as text are parsed; integers by default.</summary>
    public ShardKeyKind KeyType { get; set; } = ShardKeyKind.Integer;

    /// <summary>Range sharding: the ranges, which must tile the keys with no gap or overlap.</summary>
    public IList<ShardRangeOptions> Ranges { get; } = new List<ShardRangeOptions>();

    /// <summary>List sharding: key (as text) to shard name.</summary>
    public IDictionary<string, string> List { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>List sharding: the shard for keys not in <see cref="List"/>; none means such keys are an error.</summary>
    public string? DefaultShard { get; set; }

    /// <summary>Retries of transient failures; reads only unless <see cref="ShardRetryOptions.RetryWrites"/>.</summary>
    public ShardRetryOptions Retries { get; set; } = new(); // own instance: the binder sets properties in place

    /// <summary>The per-shard circuit breaker.</summary>
    public CircuitBreakerOptions CircuitBreaker { get; set; } = new(); // never the shared Default, which binding would change

    /// <summary>How reads use the shards' standbys (policy, lag limits, read-your-writes).</summary>
    public ReplicaOptions Replicas { get; set; } = new(); // never the shared Default, which binding would change

    /// <summary>Distributed (two-phase commit) transactions: the coordinator shard and recovery thresholds.</summary>
    public DistributedTransactionOptions DistributedTransactions { get; set; } = new();

    /// <summary>
    /// Take the bucket map from the catalog on a shard and follow its changes (buckets moved online), instead of the
    /// even spread computed from <see cref="Shards"/> and <see cref="Buckets"/>; null (the default) keeps that map.
    /// </summary>
    public StoredMapOptions? StoredMap { get; set; }

    /// <summary>
    /// Entity types whose <c>[ShardKey]</c> names route untyped commands (<c>Execute</c>, <c>ExecuteScalar</c>, DTO and
    /// anonymous parameters) from the first call, as <see cref="ShardedDataSourceBuilder.AddEntity{T}"/> does; each
    /// assembly-qualified: <c>"MyApp.Orders.Order, MyApp"</c>.
    /// </summary>
    public IList<string> EntityTypes { get; } = new List<string>();

    /// <summary>
    /// Assemblies (by name, <c>"MyApp"</c>) whose types with a <c>[ShardKey]</c> are all registered, as
    /// <see cref="ShardedDataSourceBuilder.AddEntitiesFromAssembly"/> does.
    /// </summary>
    public IList<string> EntityAssemblies { get; } = new List<string>();

    // Problems found in the configuration section before binding (unknown keys, unconvertible values); when set,
    // the section was not bound and these are the only errors reported.
    internal IReadOnlyList<string>? ConfigurationErrors { get; set; }
}

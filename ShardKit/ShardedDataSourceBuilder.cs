using System.Reflection;
using Microsoft.Extensions.Logging;
using Npgsql;
using Polly;

namespace ShardKit;

/// <summary>
/// Builds a <see cref="ShardedDataSource"/>: list the shards, pick a strategy, <see cref="Build"/>. Every setting is
/// validated at build time and then frozen; one <see cref="ShardConfigurationException"/> lists every problem.
/// </summary>
/// <example>
/// <code>
/// await using var shards = new ShardedDataSourceBuilder()
///     .AddShard("s0", "Host=db0;Database=app;Username=app")
///     .AddShard("s1", "Host=db1;Database=app;Username=app")
///     .UseHashSharding(buckets: 1024)
///     .AddEntity&lt;Order&gt;()            // lets untyped Execute/ExecuteScalar route by Order's [ShardKey] name
///     .Build();
/// await using var db = shards.CreateConnection();
/// </code>
/// </example>
public sealed class ShardedDataSourceBuilder
{
    private readonly ShardKitOptions _options = new();
    private readonly List<ShardRange> _ranges = [];
    private readonly Dictionary<ShardKeyValue, string> _list = [];
    private Func<ShardKeyValue, string>? _chooser;
    private DataSourceSettings _settings = new();

    /// <summary>Adds a shard. Order matters for modulo placement and the default spread of hash buckets.</summary>
    public ShardedDataSourceBuilder AddShard(string name, string connectionString)
    {
        _options.Shards.Add(new ShardOptions { Name = name, ConnectionString = connectionString });
        return this;
    }

    /// <summary>
    /// Adds a shard with streaming standbys (hot_standby on), each with its own pool named <c>name/standby-1</c>, …
    /// Reads use them by <see cref="ReplicaOptions.ReadPolicy"/> (see <see cref="UseReplicas"/>); writes never do.
    /// </summary>
    public ShardedDataSourceBuilder AddShard(string name, string connectionString, params IEnumerable<string> standbys)
    {
        ArgumentNullException.ThrowIfNull(standbys);
        var shard = new ShardOptions { Name = name, ConnectionString = connectionString };
        foreach (var standby in standbys)
        {
            shard.Standbys.Add(standby);
        }

        _options.Shards.Add(shard);
        return this;
    }

    /// <summary>How reads use the shards' standbys: default policy, lag limits, refresh interval, read-your-writes.</summary>
    public ShardedDataSourceBuilder UseReplicas(ReplicaOptions options)
    {
        _options.Replicas = options ?? throw new ArgumentNullException(nameof(options));
        return this;
    }

    /// <summary>PostgreSQL-compatible hash placement over <paramref name="buckets"/> equal hash ranges (the default).</summary>
    public ShardedDataSourceBuilder UseHashSharding(int buckets = 1024)
    {
        _options.Strategy = ShardingStrategyKind.Hash;
        _options.Buckets = buckets;
        return this;
    }

    /// <summary>
    /// Integer keys placed by non-negative <c>key mod shardCount</c> over the shards in the order added. For a negative
    /// key this differs from SQL's <c>k % n</c>, which keeps the key's sign (<c>-7 % 4 = -3</c>; ShardKit places it on
    /// shard 1): find a shard's rows in SQL with <c>((k % n) + n) % n</c>.
    /// </summary>
    public ShardedDataSourceBuilder UseModuloSharding()
    {
        _options.Strategy = ShardingStrategyKind.Modulo;
        return this;
    }

    /// <summary>Half-open ranges <c>[From, To)</c> per shard; gaps and overlaps are rejected by <see cref="Build"/>.</summary>
    public ShardedDataSourceBuilder UseRangeSharding(params IEnumerable<ShardRange> ranges)
    {
        ArgumentNullException.ThrowIfNull(ranges);
        _options.Strategy = ShardingStrategyKind.Range;
        _ranges.Clear();
        _ranges.AddRange(ranges);
        return this;
    }

    /// <summary>A key-to-shard directory (a tenant per shard); unlisted keys go to <paramref name="defaultShard"/> or fail.</summary>
    public ShardedDataSourceBuilder UseListSharding(IReadOnlyDictionary<ShardKeyValue, string> entries, string? defaultShard = null)
    {
        ArgumentNullException.ThrowIfNull(entries);
        _options.Strategy = ShardingStrategyKind.List;
        _list.Clear();
        foreach (var (key, shard) in entries)
        {
            _list[key] = shard;
        }

        _options.DefaultShard = defaultShard;
        return this;
    }

    /// <summary>Your own placement: a delegate from key to shard name, called for every routed command.</summary>
    public ShardedDataSourceBuilder UseCustomSharding(Func<ShardKeyValue, string> chooser)
    {
        _options.Strategy = ShardingStrategyKind.Custom;
        _chooser = chooser ?? throw new ArgumentNullException(nameof(chooser));
        return this;
    }

    /// <summary>
    /// Registers an entity whose <c>[ShardKey]</c> name routes commands that have no typed result:
    /// <c>ExecuteAsync(sql, new { CustomerId = 42L })</c> after <c>AddEntity&lt;Order&gt;()</c> goes to 42's shard, and a
    /// key array there is split per shard. Without it the name is known only once a command has used the type (a
    /// typed query, an entity as parameters), so register entities to make routing independent of call order.
    /// </summary>
    public ShardedDataSourceBuilder AddEntity<T>()
    {
        if (ShardKeyMember.For(typeof(T)) is null)
        {
            throw new ShardConfigurationException(
                $"{typeof(T).Name} has no [ShardKey]; add [ShardKey] to the property that places it before registering it with AddEntity.");
        }

        _settings = _settings with { Entities = [.. _settings.Entities, typeof(T)] };
        return this;
    }

    /// <summary>
    /// Registers every type of <paramref name="assembly"/> that declares a <c>[ShardKey]</c>, as
    /// <see cref="AddEntity{T}"/> does for one: <c>AddEntitiesFromAssembly(typeof(Order).Assembly)</c>.
    /// </summary>
    /// <exception cref="ShardConfigurationException">The assembly declares no keyed type, or a type declares its key wrongly.</exception>
    public ShardedDataSourceBuilder AddEntitiesFromAssembly(Assembly assembly)
    {
        ArgumentNullException.ThrowIfNull(assembly);
        var errors = new List<string>();
        var types = EntityRegistration.FromAssembly(assembly, errors);
        if (errors.Count > 0)
        {
            throw new ShardConfigurationException(errors);
        }

        _settings = _settings with { Entities = [.. _settings.Entities, .. types] };
        return this;
    }

    /// <summary>Adjusts each shard's <see cref="NpgsqlDataSourceBuilder"/> (type mappings, logging, pool settings).</summary>
    public ShardedDataSourceBuilder ConfigureShardDataSource(Action<NpgsqlDataSourceBuilder> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        _settings = _settings with { ConfigureShard = _settings.ConfigureShard + configure };
        return this;
    }

    /// <summary>Logs through <paramref name="loggerFactory"/> (ShardKit's own events and each shard's Npgsql logging).</summary>
    public ShardedDataSourceBuilder UseLoggerFactory(ILoggerFactory loggerFactory)
    {
        _settings = _settings with { LoggerFactory = loggerFactory ?? throw new ArgumentNullException(nameof(loggerFactory)) };
        return this;
    }

    /// <summary>The clock for circuit breakers, retry delays and id generators; tests pass a fake one.</summary>
    public ShardedDataSourceBuilder UseTimeProvider(TimeProvider timeProvider)
    {
        _settings = _settings with { Time = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider)) };
        return this;
    }

    /// <summary>
    /// How ShardKit's retry strategy (on each shard's Polly.Core pipeline) retries transient failures (default: reads
    /// twice, writes never). To use Polly's own strategies instead, see <see cref="UseResilience"/>.
    /// </summary>
    public ShardedDataSourceBuilder UseRetries(ShardRetryOptions retries)
    {
        _settings = _settings with { Retries = retries ?? throw new ArgumentNullException(nameof(retries)) };
        return this;
    }

    /// <summary>
    /// Builds each shard's Polly.Core pipeline yourself, with Polly's own strategies and options, in place of ShardKit's
    /// retry strategy; <paramref name="configure"/> gets the shard's builder (already on this data source's
    /// <see cref="TimeProvider"/>) and the shard's name. ShardKit's rules still decide what the pipeline may repeat: it
    /// runs only commands that are safe to run again (reads, writes when <see cref="ShardRetryOptions.RetryWrites"/> is
    /// set, nothing inside a transaction, nothing when the connection's <see cref="ShardRetryOptions.MaxRetries"/> is 0);
    /// every other command runs once, outside it. Each attempt is one call through the shard's circuit breaker: a refusal
    /// is a <see cref="ShardUnavailableException"/> (after a real failure of the same command, that failure is reported).
    /// Use <see cref="ShardResilience.IsTransient"/> to handle what ShardKit would retry. Attempts run one after another
    /// on the connection's session (one open connection per shard), so a strategy that runs them side by side (hedging)
    /// does not fit.
    /// </summary>
    /// <example>
    /// <code>
    /// builder.UseResilience((pipeline, shard) => pipeline.AddRetry(new RetryStrategyOptions
    /// {
    ///     ShouldHandle = new PredicateBuilder().Handle&lt;Exception&gt;(ShardResilience.IsTransient),
    ///     MaxRetryAttempts = 4,
    ///     BackoffType = DelayBackoffType.Exponential,
    ///     UseJitter = true,
    /// }));
    /// </code>
    /// </example>
    public ShardedDataSourceBuilder UseResilience(Action<ResiliencePipelineBuilder, string> configure)
    {
        _settings = _settings with { ConfigureResilience = configure ?? throw new ArgumentNullException(nameof(configure)) };
        return this;
    }

    /// <summary>When a shard counts as down and for how long commands to it fail fast.</summary>
    public ShardedDataSourceBuilder UseCircuitBreaker(CircuitBreakerOptions options)
    {
        _settings = _settings with { CircuitBreaker = options ?? throw new ArgumentNullException(nameof(options)) };
        return this;
    }

    /// <summary>
    /// Configures distributed transactions (<see cref="ShardedConnection.BeginDistributedTransactionAsync"/>): which
    /// shard keeps the decision log and when recovery may roll back. Without this call the first shard coordinates.
    /// </summary>
    public ShardedDataSourceBuilder UseDistributedTransactions(Action<DistributedTransactionOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var options = new DistributedTransactionOptions();
        configure(options);
        _settings = _settings with { Distributed = options };
        return this;
    }

    /// <summary>
    /// Takes the bucket map from the catalog (schema <c>shardkit</c>) on <paramref name="catalogShard"/> instead of the
    /// even spread over the shards, and follows it while buckets move (<see cref="ShardResharding"/>): the map is read when
    /// the data source is built, then on every <c>NOTIFY shardkit_map</c> and every
    /// <see cref="StoredMapOptions.CheckInterval"/>; while the catalog cannot be read the last map stays in use. List every
    /// shard the catalog may name (also a new, still empty one). Seed the catalog once with
    /// <see cref="ShardResharding.SeedAsync"/> (or <c>shardkit map seed</c>); until then the even spread is used. Needs hash sharding.
    /// </summary>
    public ShardedDataSourceBuilder UseStoredMap(string catalogShard, Action<StoredMapOptions>? configure = null)
    {
        var stored = new StoredMapOptions { CatalogShard = catalogShard };
        configure?.Invoke(stored);
        _options.StoredMap = stored;
        return this;
    }

    /// <summary>Validates the settings and builds the data source, one pooled <see cref="NpgsqlDataSource"/> per shard.</summary>
    /// <returns>The data source; dispose it when the app stops (it owns the shards' pools).</returns>
    /// <exception cref="ShardConfigurationException">
    /// Anything is wrong with the shards or the map, or two registered entities share a key name with keys of different
    /// kinds: the message lists every problem at once, never with a password.
    /// </exception>
    public ShardedDataSource Build()
    {
        var map = EntityRegistration.CreateMap(() => ShardMapFactory.Create(_options, _chooser,
            _options.Strategy == ShardingStrategyKind.Range ? _ranges.ToArray() : null,
            _options.Strategy == ShardingStrategyKind.List ? new Dictionary<ShardKeyValue, string>(_list) : null),
            EntityRegistration.Conflicts(_settings.Entities));
        return new ShardedDataSource(map, _settings with
        {
            Entities = _settings.Entities.Distinct().ToArray(),
            StoredMap = _options.StoredMap,
            Replicas = _options.Replicas,
        });
    }
}

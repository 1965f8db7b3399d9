using Microsoft.Extensions.Logging;
using Npgsql;

namespace ShardKit;

/// <summary>
/// The entry point: the frozen <see cref="ShardMap"/> and one pooled <see cref="NpgsqlDataSource"/> per shard (named
/// after the shard, so Npgsql's own metrics carry it). Thread-safe; create one per application and dispose it at exit.
/// </summary>
public sealed partial class ShardedDataSource : IAsyncDisposable, IDisposable
{
    private ShardResharding? _resharding;

    internal ShardedDataSource(ShardMap map, DataSourceSettings settings)
    {
        Distributed = new DistributedContext(DistributedSettings.From(settings.Distributed, map));
        Shards = new ShardSet(map, settings);
    }

    /// <summary>The shards as the layers below see them: pools, breakers, map and settings.</summary>
    internal ShardSet Shards { get; }

    internal DataSourceSettings Settings => Shards.Settings;

    internal ILogger Logger => Shards.Logger;

    /// <summary>The shard key names this data source routes untyped commands by.</summary>
    internal ShardKeyNames KeyNames => Shards.KeyNames;

    internal DistributedContext Distributed { get; }

    /// <summary>Test hook: awaited at each step of a two-phase commit, with the shard for per-shard steps.</summary>
    internal Func<DistributedStep, string?, Task>? OnDistributedStep
    {
        get => Distributed.OnStep;
        set => Distributed.OnStep = value;
    }

    /// <summary>The circuit breaker state of a shard: closed while it answers, open after repeated connection failures.</summary>
    public CircuitState GetCircuitState(string shardName) => Shards.BreakerAt(Map.IndexOf(shardName)).State;

    /// <summary>Builds a data source from bound options; throws <see cref="ShardConfigurationException"/> listing every error.</summary>
    public static ShardedDataSource Create(ShardKitOptions options) => Create(options, null);

    /// <summary>Builds a data source from bound options, logging through <paramref name="loggerFactory"/>.</summary>
    public static ShardedDataSource Create(ShardKitOptions options, ILoggerFactory? loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        var entityErrors = new List<string>();
        var entities = options.ConfigurationErrors is null ? EntityRegistration.FromOptions(options, entityErrors) : [];
        entityErrors.AddRange(EntityRegistration.Conflicts(entities));
        var settings = new DataSourceSettings
        {
            Entities = entities,
            LoggerFactory = loggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance,
            Retries = options.Retries,
            CircuitBreaker = options.CircuitBreaker,
            Distributed = options.DistributedTransactions,
            StoredMap = options.StoredMap,
            Replicas = options.Replicas,
        };
        return new ShardedDataSource(EntityRegistration.CreateMap(() => ShardMapFactory.Create(options), entityErrors), settings);
    }

    /// <summary>The shard map this data source routes by.</summary>
    public ShardMap Map => Shards.Map;

    /// <summary>The shard names in configured order.</summary>
    public IReadOnlyList<string> ShardNames => Map.ShardNames;

    /// <summary>
    /// Online resharding (seed the stored map, add a shard, move buckets, audit); needs
    /// <see cref="ShardedDataSourceBuilder.UseStoredMap"/>.
    /// </summary>
    public ShardResharding Resharding => _resharding ??= new ShardResharding(this);

    /// <summary>A new connection; it opens per-shard connections lazily, from the shards' pools.</summary>
    /// <returns>A connection for one unit of work at a time; cheap to create, dispose it when done.</returns>
    /// <exception cref="ObjectDisposedException">The data source was disposed.</exception>
    /// <example>
    /// <code>
    /// await using var db = shards.CreateConnection();
    /// var mine = await db.QueryAsync&lt;Order&gt;("select * from orders where customer_id = @CustomerId", new { CustomerId = 42L });
    /// </code>
    /// </example>
    public ShardedConnection CreateConnection()
    {
        ObjectDisposedException.ThrowIf(Shards.IsDisposed, this);
        return new ShardedConnection(this);
    }

    /// <summary>The name of the shard that owns <paramref name="key"/>.</summary>
    public string ShardFor(ShardKeyValue key) => Map.ShardFor(key);

    /// <summary>The raw Npgsql data source of one shard, for work ShardKit does not cover.</summary>
    public NpgsqlDataSource GetShardDataSource(string shardName) => Shards.DataSourceAt(Map.IndexOf(shardName));

    internal int ShardCount => Shards.Count;

    /// <inheritdoc />
    public ValueTask DisposeAsync() => Shards.DisposeAsync();

    /// <inheritdoc />
    public void Dispose() => Shards.Dispose();
}

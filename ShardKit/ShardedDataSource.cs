using Microsoft.Extensions.Logging;
using Npgsql;

namespace ShardKit;

/// <summary>
/// The entry point: the frozen <see cref="ShardMap"/> and one pooled <see cref="NpgsqlDataSource"/> per shard (named
/// after the shard, so Npgsql's own metrics carry it). Thread-safe; create one per application and dispose it at exit.
/// </summary>
public sealed partial class ShardedDataSource : IAsyncDisposable, IDisposable
{
    private readonly NpgsqlDataSource[] _dataSources;
    private readonly ShardCircuitBreaker[] _breakers;
    private int _disposed;

    internal ShardedDataSource(ShardMap map, DataSourceSettings settings)
    {
        Map = map;
        Settings = settings;
        Distributed = DistributedSettings.From(settings.Distributed, map);
        Logger = settings.LoggerFactory.CreateLogger("ShardKit");
        _dataSources = map.Shards.Select(shard =>
        {
            var builder = new NpgsqlDataSourceBuilder(shard.ConnectionString) { Name = shard.Name };
            builder.UseLoggerFactory(settings.LoggerFactory);
            settings.ConfigureShard?.Invoke(builder);
            return builder.Build();
        }).ToArray();
        foreach (var entity in settings.Entities)
        {
            KeyNames.Remember(ShardKeyMember.For(entity));
        }

        _breakers = map.Shards.Select(shard => new ShardCircuitBreaker(shard.Name, settings.CircuitBreaker, settings.Time, Logger)).ToArray();
    }

    internal DataSourceSettings Settings { get; }

    internal ILogger Logger { get; }

    /// <summary>The shard key names this data source routes untyped commands by.</summary>
    internal ShardKeyNames KeyNames { get; } = new();

    internal DistributedSettings Distributed { get; }

    /// <summary>Test hook: awaited at each step of a two-phase commit, with the shard for per-shard steps.</summary>
    internal Func<DistributedStep, string?, Task>? OnDistributedStep { get; set; }

    internal ShardCircuitBreaker BreakerAt(int index) => _breakers[index];

    /// <summary>The circuit breaker state of a shard: closed while it answers, open after repeated connection failures.</summary>
    public CircuitState GetCircuitState(string shardName) => _breakers[Map.IndexOf(shardName)].State;

    /// <summary>Builds a data source from bound options; throws <see cref="ShardConfigurationException"/> listing every error.</summary>
    public static ShardedDataSource Create(ShardKitOptions options) => Create(options, null);

    /// <summary>Builds a data source from bound options, logging through <paramref name="loggerFactory"/>.</summary>
    public static ShardedDataSource Create(ShardKitOptions options, ILoggerFactory? loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        var settings = new DataSourceSettings
        {
            LoggerFactory = loggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance,
            Retries = options.Retries,
            CircuitBreaker = options.CircuitBreaker,
            Distributed = options.DistributedTransactions,
        };
        return new ShardedDataSource(ShardMapFactory.Create(options), settings);
    }

    /// <summary>The shard map this data source routes by.</summary>
    public ShardMap Map { get; }

    /// <summary>The shard names in configured order.</summary>
    public IReadOnlyList<string> ShardNames => Map.ShardNames;

    /// <summary>A new connection; it opens per-shard connections lazily, from the shards' pools.</summary>
    public ShardedConnection CreateConnection()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return new ShardedConnection(this);
    }

    /// <summary>The name of the shard that owns <paramref name="key"/>.</summary>
    public string ShardFor(ShardKeyValue key) => Map.ShardFor(key);

    /// <summary>The raw Npgsql data source of one shard, for work ShardKit does not cover.</summary>
    public NpgsqlDataSource GetShardDataSource(string shardName) => _dataSources[Map.IndexOf(shardName)];

    internal NpgsqlDataSource DataSourceAt(int index) => _dataSources[index];

    internal int ShardCount => _dataSources.Length;

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            foreach (var source in _dataSources)
            {
                await source.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            foreach (var source in _dataSources)
            {
                source.Dispose();
            }
        }
    }
}

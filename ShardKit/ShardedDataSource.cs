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
    private readonly ShardRecoveryProbe[] _probes;
    private readonly CancellationTokenSource _stopping = new();
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
            // A refused statement of a pipelined batch then says which one it was, so the error can name the item.
            builder.ConnectionStringBuilder.IncludeFailedBatchedCommand = true;
            // Inside ShardKit's client span Npgsql's span would be a second client span for the same call: one per call.
            builder.ConfigureTracing(static tracing => tracing
                .ConfigureCommandFilter(static _ => !ShardKitTelemetry.InCommandSpan)
                .ConfigureBatchFilter(static _ => !ShardKitTelemetry.InCommandSpan)
                .ConfigureCopyOperationFilter(static _ => !ShardKitTelemetry.InCommandSpan));
            settings.ConfigureShard?.Invoke(builder);
            return builder.Build();
        }).ToArray();
        foreach (var entity in settings.Entities)
        {
            KeyNames.Remember(ShardKeyMember.For(entity));
        }

        _breakers = map.Shards.Select(shard => new ShardCircuitBreaker(shard.Name, settings.CircuitBreaker, settings.Time, Logger)).ToArray();
        _probes = map.Shards.Select(shard => StartProbingWhenOpen(shard.Index)).ToArray();
    }

    // Wires a shard's breaker to its background recovery probe (none when the options turn it off).
    private ShardRecoveryProbe StartProbingWhenOpen(int shard)
    {
        var options = Settings.CircuitBreaker;
        var probe = new ShardRecoveryProbe(_breakers[shard], _dataSources[shard], options.ProbeInterval, Settings.Time, _stopping.Token);
        if (options.ProbeInterval > TimeSpan.Zero)
        {
            _breakers[shard].Opened = probe.Start;
        }

        return probe;
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
        };
        return new ShardedDataSource(EntityRegistration.CreateMap(() => ShardMapFactory.Create(options), entityErrors), settings);
    }

    /// <summary>The shard map this data source routes by.</summary>
    public ShardMap Map { get; }

    /// <summary>The shard names in configured order.</summary>
    public IReadOnlyList<string> ShardNames => Map.ShardNames;

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
            await _stopping.CancelAsync().ConfigureAwait(false);
            foreach (var probe in _probes)
            {
                await probe.Running.ConfigureAwait(false); // never faults: a stopped probe ends quietly
            }

            foreach (var source in _dataSources)
            {
                await source.DisposeAsync().ConfigureAwait(false);
            }

            _stopping.Dispose();
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _stopping.Cancel(); // a probe still running ends quietly at its next step
            foreach (var source in _dataSources)
            {
                source.Dispose();
            }

            _stopping.Dispose();
        }
    }
}

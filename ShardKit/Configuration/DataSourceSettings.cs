using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Polly;

namespace ShardKit;

/// <summary>Everything a data source is built with besides the shard map, frozen at build time.</summary>
internal sealed record DataSourceSettings
{
    public Action<NpgsqlDataSourceBuilder>? ConfigureShard { get; init; }

    public TimeProvider Time { get; init; } = TimeProvider.System;

    public ILoggerFactory LoggerFactory { get; init; } = NullLoggerFactory.Instance;

    public ShardRetryOptions Retries { get; init; } = ShardRetryOptions.Default;

    /// <summary>Builds a shard's Polly pipeline in place of ShardKit's retry strategy (UseResilience).</summary>
    public Action<ResiliencePipelineBuilder, string>? ConfigureResilience { get; init; }

    public CircuitBreakerOptions CircuitBreaker { get; init; } = CircuitBreakerOptions.Default;

    public DistributedTransactionOptions? Distributed { get; init; }

    /// <summary>The stored map to follow (UseStoredMap); null for a map fixed at build time.</summary>
    public StoredMapOptions? StoredMap { get; init; }

    public ReplicaOptions Replicas { get; init; } = ReplicaOptions.Default;

    /// <summary>Entity types registered with AddEntity; their key names are known from the first command.</summary>
    public IReadOnlyList<Type> Entities { get; init; } = [];
}

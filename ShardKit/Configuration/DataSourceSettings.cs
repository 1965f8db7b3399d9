using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace ShardKit;

/// <summary>Everything a data source is built with besides the shard map, frozen at build time.</summary>
internal sealed record DataSourceSettings
{
    public Action<NpgsqlDataSourceBuilder>? ConfigureShard { get; init; }

    public TimeProvider Time { get; init; } = TimeProvider.System;

    public ILoggerFactory LoggerFactory { get; init; } = NullLoggerFactory.Instance;

    public ShardRetryOptions Retries { get; init; } = ShardRetryOptions.Default;

    public CircuitBreakerOptions CircuitBreaker { get; init; } = CircuitBreakerOptions.Default;

    public DistributedTransactionOptions? Distributed { get; init; }

    /// <summary>Entity types registered with AddEntity; their key names are known from the first command.</summary>
    public IReadOnlyList<Type> Entities { get; init; } = [];
}

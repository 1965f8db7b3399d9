using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace ShardKit;

/// <summary>Registers ShardKit's schema migration services.</summary>
public static class ShardKitMigrationsServiceCollectionExtensions
{
    /// <summary>
    /// Registers a singleton <see cref="ShardMigrator"/> for <paramref name="migrations"/> on the registered
    /// <see cref="ShardedDataSource"/> (<c>AddShardKit</c>) and the <see cref="ShardMigrationHealthCheck"/> that reports its
    /// drift; add the check with <c>services.AddHealthChecks().AddCheck&lt;ShardMigrationHealthCheck&gt;("migrations")</c>.
    /// </summary>
    /// <example>
    /// <code>
    /// builder.Services.AddShardKitMigrationsCheck(MigrationScripts.FromEmbeddedResources(typeof(Program).Assembly));
    /// builder.Services.AddHealthChecks().AddCheck&lt;ShardMigrationHealthCheck&gt;("migrations");
    /// </code>
    /// </example>
    public static IServiceCollection AddShardKitMigrationsCheck(this IServiceCollection services, IEnumerable<Migration> migrations,
        MigrationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var list = MigrationList.Ordered(migrations);
        services.TryAddSingleton(provider => provider.GetRequiredService<ShardedDataSource>().CreateMigrator(list, options));
        services.TryAddSingleton<ShardMigrationHealthCheck>();
        return services;
    }
}

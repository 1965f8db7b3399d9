using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace ShardKit;

/// <summary>Registers ShardKit with a service collection.</summary>
public static class ShardKitServiceCollectionExtensions
{
    /// <summary>
    /// Binds <see cref="ShardKitOptions"/> from <paramref name="section"/> (usually <c>config.GetSection("ShardKit")</c>),
    /// validates it on start (a misspelled key or an unconvertible value is an error that names the key and the nearest
    /// valid one; host users receive every error in one <see cref="OptionsValidationException"/>), and registers a singleton <see cref="ShardedDataSource"/> and a transient
    /// <see cref="ShardedConnection"/>.
    /// </summary>
    /// <exception cref="OptionsValidationException">
    /// At host start (or the first resolution of <see cref="ShardedDataSource"/>): the configuration is invalid; its
    /// <see cref="OptionsValidationException.Failures"/> list every problem.
    /// </exception>
    /// <example>
    /// <code>
    /// builder.Services.AddShardKit(builder.Configuration.GetSection(ShardKitOptions.SectionName));
    /// </code>
    /// </example>
    public static IServiceCollection AddShardKit(this IServiceCollection services, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(section);
        return services.AddShardKit(options =>
        {
            var errors = ConfigurationCheck.Check(section);
            if (errors.Count > 0)
            {
                options.ConfigurationErrors = errors;
                return;
            }

            section.Bind(options);
        });
    }

    /// <summary>Configures <see cref="ShardKitOptions"/> in code; otherwise as the configuration overload.</summary>
    public static IServiceCollection AddShardKit(this IServiceCollection services, Action<ShardKitOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<ShardKitOptions>().Configure(configure).ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ShardKitOptions>, ShardKitOptionsValidator>());
        services.TryAddSingleton(provider => ShardedDataSource.Create(
            provider.GetRequiredService<IOptions<ShardKitOptions>>().Value, provider.GetService<ILoggerFactory>()));
        services.TryAddTransient(provider => provider.GetRequiredService<ShardedDataSource>().CreateConnection());
        return services;
    }

    /// <summary>
    /// Adds a hosted service that runs <see cref="ShardedDataSource.RecoverAsync"/> every <paramref name="interval"/>
    /// (one minute by default), finishing distributed transactions a crash left prepared. Needs a registered
    /// <see cref="ShardedDataSource"/> (<c>AddShardKit</c>). Several app instances may all run it.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="interval">Time between runs; one minute by default.</param>
    /// <param name="runAtStart">
    /// <c>true</c>: the first run is at host start, so transactions a crashed earlier process left prepared (holding
    /// their locks) are finished at once. <c>false</c> (the default): the first run waits until this process begins a
    /// distributed transaction, so an app that never uses them sends nothing to its shards and creates nothing there.
    /// </param>
    public static IServiceCollection AddShardKitRecovery(this IServiceCollection services, TimeSpan? interval = null, bool runAtStart = false)
    {
        ArgumentNullException.ThrowIfNull(services);
        var every = interval ?? TimeSpan.FromMinutes(1);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(every, TimeSpan.Zero, nameof(interval));
        services.AddHostedService(provider => new DistributedRecoveryService(provider.GetRequiredService<ShardedDataSource>(), every, runAtStart));
        return services;
    }
}

using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace ShardKit.Tool;

/// <summary>
/// The shards a command works on, from <c>--shard NAME=CONNECTION_STRING</c> (repeated) or from <c>--config FILE</c> with
/// the <c>ShardKit</c> section an app binds with <c>AddShardKit</c>. Owns what it built.
/// </summary>
internal sealed class ToolShards : IAsyncDisposable
{
    private readonly ServiceProvider? _services;

    private ToolShards(ShardedDataSource source, ServiceProvider? services)
    {
        Source = source;
        _services = services;
    }

    public ShardedDataSource Source { get; }

    /// <exception cref="UsageException">Neither or both sources given, a malformed --shard, or an invalid configuration.</exception>
    public static ToolShards Open(IReadOnlyList<string> shards, string? configFile, string section, string? catalog = null, int buckets = 1024)
    {
        if (shards.Count > 0 == configFile is not null)
        {
            throw new UsageException(shards.Count > 0
                ? "Pass the shards either with --shard or with --config, not both."
                : "No shards given: pass --shard NAME=CONNECTION_STRING once per shard, or --config appsettings.json (with a \"ShardKit\" section).");
        }

        try
        {
            return configFile is null ? FromArguments(shards, catalog, buckets) : FromConfig(configFile, section, catalog);
        }
        catch (ShardConfigurationException e)
        {
            throw new UsageException(e.Message);
        }
        catch (OptionsValidationException e)
        {
            throw new UsageException($"The '{section}' section of {configFile} is invalid: " + string.Join(" ", e.Failures));
        }
    }

    private static ToolShards FromArguments(IReadOnlyList<string> shards, string? catalog, int buckets)
    {
        var builder = new ShardedDataSourceBuilder().UseHashSharding(buckets);
        if (catalog is not null)
        {
            builder.UseStoredMap(catalog);
        }

        foreach (var shard in shards)
        {
            // NAME=Host=…: a bare connection string (Host=db0;…) has no key=value right after its first '='.
            var split = shard.IndexOf('=', StringComparison.Ordinal);
            if (split <= 0 || !shard[(split + 1)..].Split(';')[0].Contains('=', StringComparison.Ordinal))
            {
                throw new UsageException(
                    $"--shard '{NameOnly(shard)}' is not NAME=CONNECTION_STRING; write for example --shard \"s0=Host=db0;Database=app;Username=app\".");
            }

            builder.AddShard(shard[..split].Trim(), shard[(split + 1)..]);
        }

        return new ToolShards(builder.Build(), null);
    }

    private static ToolShards FromConfig(string file, string section, string? catalog)
    {
        var path = Path.GetFullPath(file);
        if (!File.Exists(path))
        {
            throw new UsageException($"The configuration file '{path}' does not exist; pass the appsettings.json that holds the '{section}' section.");
        }

        IConfigurationRoot configuration;
        try
        {
            var builder = new ConfigurationBuilder().AddJsonFile(path, optional: false);
            if (catalog is not null)
            {
                builder.AddInMemoryCollection([new($"{section}:StoredMap:CatalogShard", catalog)]);
            }

            configuration = builder.Build();
        }
        catch (Exception e) when (e is InvalidDataException or FormatException or IOException)
        {
            throw new UsageException($"The configuration file '{path}' cannot be read as JSON: {e.Message}");
        }

        if (!configuration.GetSection(section).Exists())
        {
            throw new UsageException($"The configuration file '{path}' has no '{section}' section; see the README's Configuration section for its shape.");
        }

        var services = new ServiceCollection().AddShardKit(configuration.GetSection(section)).BuildServiceProvider();
        try
        {
            return new ToolShards(services.GetRequiredService<ShardedDataSource>(), services);
        }
        catch
        {
            services.Dispose();
            throw;
        }
    }

    // A malformed argument may be a bare connection string: never echo what could hold a password.
    private static string NameOnly(string argument) =>
        argument.Contains(';', StringComparison.Ordinal) || argument.Contains("password", StringComparison.OrdinalIgnoreCase) ? "…" : argument;

    public async ValueTask DisposeAsync()
    {
        if (_services is not null)
        {
            await _services.DisposeAsync();
        }
        else
        {
            await Source.DisposeAsync();
        }
    }
}

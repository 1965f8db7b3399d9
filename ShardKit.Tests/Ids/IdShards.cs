
namespace ShardKit.Tests.Ids;

/// <summary>Real shards for id tests: a worker table of the test's own, and more data sources to play other processes.</summary>
internal static class IdShards
{
    /// <summary>A context whose table name is used as the worker table (dropped with the context).</summary>
    public static Task<ShardTestContext> WithWorkerTableAsync(TimeProvider? clock = null, Action<ShardedDataSourceBuilder>? configure = null) =>
        ShardTestContext.CreateAsync("select '{0}'", builder =>
        {
            if (clock is not null)
            {
                builder.UseTimeProvider(clock);
            }

            configure?.Invoke(builder);
        }, stem: "idw");

    /// <summary>Short leases, so tests move the clock by seconds.</summary>
    public static ShardIdGeneratorOptions Options(ShardTestContext context) => new()
    {
        WorkerTable = context.Table,
        LeaseDuration = TimeSpan.FromSeconds(10),
        RenewInterval = TimeSpan.FromSeconds(3),
    };

    /// <summary>A data source over the same shards, as another process would build it.</summary>
    public static ShardedDataSource AnotherProcess(ShardTestContext context, TimeProvider? clock = null,
        Action<ShardedDataSourceBuilder>? configure = null)
    {
        var builder = new ShardedDataSourceBuilder();
        for (var i = 0; i < context.Shards.Count; i++)
        {
            builder.AddShard(context.Shards.Names[i], context.Shards.ConnectionStrings[i]);
        }

        if (clock is not null)
        {
            builder.UseTimeProvider(clock);
        }

        configure?.Invoke(builder);
        return builder.Build();
    }
}

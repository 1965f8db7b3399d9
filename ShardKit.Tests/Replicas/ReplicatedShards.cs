using Npgsql;
using ShardKit.Tests.Distributed;
using ShardKit.Tests.Harness;

namespace ShardKit.Tests.Replicas;

/// <summary>
/// Primaries of a test fixture's own, each with one streaming standby: replication tests pause, stop and promote
/// servers, which the run's shared shards must never see. Shards are named <c>{prefix}0</c>, <c>{prefix}1</c>, …
/// </summary>
internal sealed class ReplicatedShards : IAsyncDisposable
{
    private ReplicatedShards(LocalPostgresCluster cluster, LocalStandby[] standbys, string prefix)
    {
        Cluster = cluster;
        Standbys = standbys;
        Names = Enumerable.Range(0, standbys.Length).Select(i => prefix + i).ToArray();
    }

    public LocalPostgresCluster Cluster { get; }

    public LocalStandby[] Standbys { get; }

    public string[] Names { get; }

    public static async Task<ReplicatedShards> StartAsync(int count, string prefix, string schema)
    {
        var cluster = await DedicatedCluster.StartAsync(count);
        var standbys = new List<LocalStandby>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                await using var primary = new NpgsqlConnection(cluster.ConnectionStrings[i]);
                await primary.OpenAsync();
                await using var create = new NpgsqlCommand(schema, primary);
                await create.ExecuteNonQueryAsync();
            }

            // One at a time: two base backups at once would share the machine's two cores with the rest of the run.
            for (var i = 0; i < count; i++)
            {
                standbys.Add(await LocalStandby.StartAsync(cluster, i, $"{prefix}{i}-standby"));
            }

            return new ReplicatedShards(cluster, [.. standbys], prefix);
        }
        catch
        {
            foreach (var standby in standbys)
            {
                await standby.DisposeAsync();
            }

            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <summary>A data source over these shards and their standbys, checked once before it is returned.</summary>
    public async Task<ShardedDataSource> BuildAsync(ReplicaOptions options, Action<ShardedDataSourceBuilder>? configure = null)
    {
        var builder = new ShardedDataSourceBuilder().UseModuloSharding().UseReplicas(options);
        for (var i = 0; i < Names.Length; i++)
        {
            builder.AddShard(Names[i], Cluster.ConnectionStrings[i], Standbys[i].ConnectionString);
        }

        configure?.Invoke(builder);
        var source = builder.Build();
        await source.Shards.Standbys.RefreshAsync(CancellationToken.None);
        return source;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var standby in Standbys)
        {
            await standby.DisposeAsync();
        }

        await Cluster.DisposeAsync();
    }
}

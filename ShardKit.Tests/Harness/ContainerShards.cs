using Testcontainers.PostgreSql;

namespace ShardKit.Tests.Harness;

/// <summary>One PostgreSQL container per shard, started in parallel through Testcontainers.</summary>
internal sealed class ContainerShards : IAsyncDisposable
{
    // Pinned so a run measures the same server everywhere; 15 matches the local Debian servers.
    private const string Image = "postgres:15.8-alpine";

    private readonly PostgreSqlContainer[] _containers;

    private ContainerShards(PostgreSqlContainer[] containers) => _containers = containers;

    public IReadOnlyList<string> ConnectionStrings => _containers.Select(c => c.GetConnectionString()).ToArray();

    public static async Task<ContainerShards> StartAsync(int count)
    {
        var containers = Enumerable.Range(0, count)
            .Select(_ => new PostgreSqlBuilder(Image)
                .WithCommand("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_prepared_transactions=100",
                    "-c", "max_connections=200",
                    "-c", "wal_level=logical", "-c", "max_replication_slots=20", "-c", "max_wal_senders=20")
                .Build())
            .ToArray();
        var shards = new ContainerShards(containers);
        try
        {
            await Task.WhenAll(containers.Select(c => c.StartAsync()));
            return shards;
        }
        catch
        {
            await shards.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync() =>
        await Task.WhenAll(_containers.Select(c => c.DisposeAsync().AsTask()));
}

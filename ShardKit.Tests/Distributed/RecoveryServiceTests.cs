using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Npgsql;

namespace ShardKit.Tests.Distributed;

public sealed class RecoveryServiceTests
{
    [Test]
    public async Task The_recovery_service_sends_nothing_and_creates_nothing_until_the_app_begins_a_distributed_transaction()
    {
        var set = await Shards.GetAsync();
        var databases = new List<(string Admin, string Name)>();
        try
        {
            var connectionStrings = new List<string>();
            foreach (var admin in set.ConnectionStrings.Take(2))
            {
                var name = $"lazy_{Guid.NewGuid():N}";
                await ExecuteAsync(admin, $"create database {name}");
                databases.Add((admin, name));
                connectionStrings.Add(new NpgsqlConnectionStringBuilder(admin) { Database = name, Pooling = false }.ConnectionString);
            }

            await using var source = new ShardedDataSourceBuilder()
                .AddShard("a", connectionStrings[0]).AddShard("b", connectionStrings[1]).Build();
            await using var provider = new ServiceCollection().AddSingleton(source)
                .AddShardKitRecovery(TimeSpan.FromMilliseconds(50)).BuildServiceProvider();
            var service = (DistributedRecoveryService)provider.GetServices<IHostedService>().Single();
            await service.StartAsync(CancellationToken.None);

            await Task.Delay(TimeSpan.FromSeconds(1)); // about 20 intervals: an eager service would have run by now
            Assert.That(service.Runs, Is.Zero);
            Assert.That(await DecisionTableExistsAsync(connectionStrings[0]), Is.False);

            await using (var db = source.CreateConnection())
            {
                await using var transaction = await db.BeginDistributedTransactionAsync();
            }

            for (var wait = 0; service.Runs == 0 && wait < 1500; wait++)
            {
                await Task.Delay(20);
            }

            await service.StopAsync(CancellationToken.None);
            Assert.That(service.Runs, Is.GreaterThanOrEqualTo(1), "recovery starts once distributed transactions are in use");
            Assert.That(await DecisionTableExistsAsync(connectionStrings[0]), Is.False, "a run with nothing to decide creates nothing");
        }
        finally
        {
            foreach (var (admin, name) in databases)
            {
                await ExecuteAsync(admin, $"drop database if exists {name} with (force)");
            }
        }
    }

    private static async Task<bool> DecisionTableExistsAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("select to_regclass('shardkit_2pc_decisions') is not null", connection);
        return (bool)(await command.ExecuteScalarAsync())!;
    }

    private static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}

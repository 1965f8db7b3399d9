using Dapper;
using Npgsql;
using ShardKit.Tests.Harness;
using Row = ShardKit.Tests.Distributed.DistributedShards.Row;

namespace ShardKit.Tests.Distributed;

/// <summary>A shard started with <c>max_prepared_transactions = 0</c>, PostgreSQL's default, next to a normal one.</summary>
public sealed class PreparedTransactionsDisabledTests
{
    private LocalPostgresCluster? _disabled;

    [OneTimeSetUp]
    public async Task StartServerWithoutPreparedTransactions() =>
        _disabled = await DedicatedCluster.StartAsync(1, "max_prepared_transactions=0");

    [OneTimeTearDown]
    public async Task StopServer()
    {
        if (_disabled is not null)
        {
            await _disabled.DisposeAsync();
        }
    }

    [Test]
    public async Task Commit_over_a_shard_without_prepared_transactions_rolls_back_and_names_the_shard_and_the_setting()
    {
        var shared = await Shards.GetAsync();
        var direct = new[] { shared.ConnectionStrings[0], _disabled!.ConnectionStrings[0] };
        var table = Tests.Shards.UniqueTable("dtx");
        await using var s = DistributedShards.Create(direct, DistributedShards.UniqueNames(2), table, [], ownsResources: false, null);
        await s.OnEveryShardAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, DistributedShards.Ddl, table));
        try
        {
            await using var db = s.Source.CreateConnection();
            await using var tx = await db.BeginDistributedTransactionAsync();
            await db.ExecuteAsync($"insert into {table} values (@CustomerId, @Id)",
                new[] { new Row { CustomerId = s.KeyOn(0), Id = 1 }, new Row { CustomerId = s.KeyOn(1), Id = 2 } });

            var error = Assert.ThrowsAsync<ShardAggregateException>(() => tx.CommitAsync());

            Assert.That(error!.FailedShards, Is.EqualTo(new[] { s.Names[1] }));
            var cause = error.InnerExceptions.Single();
            Assert.That(cause, Is.TypeOf<PreparedTransactionsUnavailableException>());
            Assert.That(((PreparedTransactionsUnavailableException)cause).Shard, Is.EqualTo(s.Names[1]));
            Assert.That(cause.Message, Does.Contain("max_prepared_transactions").And.Contain(s.Names[1]));
            Assert.That(cause.InnerException, Is.TypeOf<PostgresException>().With.Property("SqlState").EqualTo("55000"));
            Assert.That(await s.CountsAsync(), Is.All.Zero);
            Assert.That(await s.PreparedAsync(), Is.Empty, "the shard that prepared was rolled back");

            await using var single = await db.BeginDistributedTransactionAsync();
            await db.ExecuteAsync($"insert into {table} values (@CustomerId, @Id)", new Row { CustomerId = s.KeyOn(1), Id = 3 });
            Assert.That((await single.CommitAsync()).UsedTwoPhaseCommit, Is.False, "one shard needs no prepared transaction");
            Assert.That(await s.CountsAsync(), Is.EqualTo(new long[] { 0, 1 }));
        }
        finally
        {
            await using var conn = new NpgsqlConnection(direct[0]);
            await conn.OpenAsync();
            await conn.ExecuteAsync($"drop table if exists {table}");
        }
    }
}

using Dapper;
using ShardKit.Tests.Resharding;

namespace ShardKit.Tests.Distributed;

[TestFixture]
public sealed class DecisionLogRaceTests
{
    // Found by the resharding fault trials: the first distributed commits of several writers at once raced to create the
    // decision log, and the loser's "create table if not exists" failed with 42710 (its row type exists) and rolled back.
    [Test]
    public async Task The_first_distributed_commits_of_many_connections_at_once_all_commit()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var source = shards.NewSource(stored: false);
        var keys = Enumerable.Range(1, 1000).Select(i => (long)i).ToArray();
        var onS0 = keys.Where(k => source.ShardFor(k) == "s0").Take(12).ToArray();
        var onS1 = keys.Where(k => source.ShardFor(k) == "s1").Take(12).ToArray();

        // Twelve processes (data sources of their own), all prepared, then committing at the same moment.
        var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var ready = 0;
        var commits = Enumerable.Range(0, 12).Select(async i =>
        {
            var process = shards.NewSource(stored: false);
            await using var db = process.CreateConnection();
            await using var transaction = await db.BeginDistributedTransactionAsync();
            await db.ExecuteAsync("insert into items (id) values (@Id)", new Item { Id = onS0[i] });
            await db.ExecuteAsync("insert into items (id) values (@Id)", new Item { Id = onS1[i] });
            if (Interlocked.Increment(ref ready) == 12)
            {
                go.SetResult();
            }

            await go.Task;
            await transaction.CommitAsync();
        }).ToList();
        await Task.WhenAll(commits);

        Assert.That((await shards.AllRowsAsync()).Count, Is.EqualTo(24));
    }
}

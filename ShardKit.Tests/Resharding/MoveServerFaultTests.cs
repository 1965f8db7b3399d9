using ShardKit.Tests.Distributed;

namespace ShardKit.Tests.Resharding;

/// <summary>Moves whose source or target server stops mid-way, on servers of the test's own.</summary>
[TestFixture]
public sealed class MoveServerFaultTests
{
    [Test]
    public async Task A_move_whose_target_or_source_server_stops_resumes_once_the_server_is_back()
    {
        await using var cluster = await DedicatedCluster.StartAsync(2);
        await using var shards = await ReshardingShards.CreateOnAsync(cluster.ConnectionStrings);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([new ShardedTable(ReshardingShards.Table, "id")]);
        var truth = await MoveTests.SeedRowsAsync(admin, 3000);
        var options = new MoveOptions { CleanupDelay = TimeSpan.Zero, Parallelism = 1, AnnounceWait = TimeSpan.Zero, CopyScanBytes = 1 };

        // The target stops while rows are copied.
        var first = admin.Map.Buckets!.BucketsOf(0).Take(12).ToArray();
        var stopped = false;
        var error = Assert.ThrowsAsync<ShardMoveException>(() => admin.Resharding.MoveBucketsAsync(first, "s1", options, new InlineProgress(p =>
        {
            if (p.State == MoveState.Copying && p.RowsCopied > 0 && !stopped)
            {
                stopped = true;
                cluster.StopAsync(1).GetAwaiter().GetResult();
            }
        })));
        Assert.That(error!.MoveId, Is.Not.Null);
        Assert.That(error.Message, Does.Contain("Resume it"));
        await cluster.RestartAsync(1);
        Forget(admin);
        var resumed = await admin.Resharding.ResumeMoveAsync(error.MoveId!, options);
        Assert.That(resumed.Buckets, Is.EqualTo(first));

        // The source (which also holds the catalog) stops while changes are caught up.
        var second = admin.Map.Buckets!.BucketsOf(0).Take(12).ToArray();
        stopped = false;
        string? moveId = null;
        Assert.CatchAsync(() => admin.Resharding.MoveBucketsAsync(second, "s1", options, new InlineProgress(p =>
        {
            moveId = p.MoveId;
            if (p.State == MoveState.CatchingUp && !stopped)
            {
                stopped = true;
                cluster.StopAsync(0).GetAwaiter().GetResult();
            }
        })));
        await cluster.RestartAsync(0);
        Forget(admin);
        await admin.Resharding.ResumeMoveAsync(moveId!, options);

        Assert.That(admin.Map.Buckets!.BucketsOf(1), Is.SupersetOf(first.Concat(second)));
        await MoveTests.AssertPlacedAsync(shards, admin, truth);
    }

    // Connections opened before a server restarted are dead; pools hand out fresh ones from here on.
    private static void Forget(ShardedDataSource source)
    {
        foreach (var name in source.ShardNames)
        {
            source.GetShardDataSource(name).Clear();
        }

        Npgsql.NpgsqlConnection.ClearAllPools();
    }
}

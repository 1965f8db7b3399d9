using Dapper;
using Npgsql;

namespace ShardKit.Tests.Resharding;

// A move's sessions turn the fence off (shardkit.fence = off) to copy and apply rows the target does not own yet. They must
// never reach an app: not through Npgsql's global pool, which an app's `new NpgsqlConnection(sameString)` shares, and not
// through a pool that does not reset sessions (No Reset On Close).
[TestFixture]
public sealed class MoverConnectionTests
{
    private static readonly ShardedTable Items = new(ReshardingShards.Table, "id");

    [Test]
    public async Task A_moves_sessions_are_named_and_never_handed_to_an_app_with_the_fence_off()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([Items]);
        var truth = await MoveTests.SeedRowsAsync(admin, 300);
        var noReset = shards.Direct.Select(d => new NpgsqlConnectionStringBuilder(d) { NoResetOnClose = true }.ConnectionString).ToArray();
        var names = new List<string>();
        var progress = new Action<MoveProgress>(_ =>
        {
            using var look = new NpgsqlConnection(shards.Direct[0]);
            look.Open();
            lock (names)
            {
                names.AddRange(look.Query<string>("select application_name from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"));
            }
        });

        // The mover's data source over strings that do not reset sessions, as an app's may be.
        await using (var moverOverNoReset = new ShardedDataSourceBuilder().UseHashSharding(shards.Buckets).AddEntity<Item>()
                         .AddShard("s0", noReset[0]).AddShard("s1", noReset[1]).UseStoredMap("s0").Build())
        {
            await moverOverNoReset.Resharding.MoveBucketsAsync(admin.Map.Buckets!.BucketsOf(0).Take(3).ToArray(), "s1",
                new MoveOptions { CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero, AnnounceWait = TimeSpan.Zero },
                new SyncProgress(progress));
        }

        Assert.That(names, Has.Some.StartsWith(BucketReplication.MoverApplicationName), "the move's connections are named");
        // Every pooled connection an app opens with the same strings: none has the fence off.
        for (var shard = 0; shard < 2; shard++)
        {
            var opened = new List<NpgsqlConnection>();
            for (var i = 0; i < 8; i++)
            {
                var connection = new NpgsqlConnection(noReset[shard]);
                await connection.OpenAsync();
                opened.Add(connection);
                Assert.That(await connection.ExecuteScalarAsync<string>("select coalesce(current_setting('shardkit.fence', true), '')"), Is.Not.EqualTo("off"),
                    $"an app's connection to s{shard} came with the fence off");
            }

            foreach (var connection in opened)
            {
                await connection.DisposeAsync();
            }
        }

        await MoveTests.AssertPlacedAsync(shards, admin, truth);
    }

    private sealed class SyncProgress(Action<MoveProgress> report) : IProgress<MoveProgress>
    {
        public void Report(MoveProgress value) => report(value);
    }
}

using Dapper;
using System.Globalization;

namespace ShardKit.Tests.Resharding;

/// <summary>
/// Randomized moves under writers (single statements, item and key lists, distributed transactions, bulk loads), each
/// stopped at a random step (the mover killed, or the source's replication connection cut), then resumed or cancelled
/// at random; afterwards every committed write is where the map
/// says, once, and nothing of any move is left. <c>SHARDKIT_MOVE_TRIALS</c> sets the number of moves (6 by default).
/// </summary>
[TestFixture]
public sealed class MoveFaultTrialTests
{
    [Test]
    public async Task Moves_stopped_at_random_steps_then_resumed_or_cancelled_lose_and_duplicate_nothing()
    {
        var trials = int.TryParse(Environment.GetEnvironmentVariable("SHARDKIT_MOVE_TRIALS"), CultureInfo.InvariantCulture, out var n) ? n : 6;
        await using var shards = await ReshardingShards.CreateAsync(2);
        var admin = shards.NewSource();
        await admin.Resharding.SeedAsync([new ShardedTable(ReshardingShards.Table, "id")]);
        var truth = await MoveTests.SeedRowsAsync(admin, 2000);
        var app = shards.NewSource();
        var writers = new MoveWriters(app, writers: 6, keys: 3000);
        writers.Start();
        var random = new Random(20261204);
        var outcomes = new List<string>();
        var options = new MoveOptions { CleanupDelay = TimeSpan.Zero, DeletePause = TimeSpan.Zero, AnnounceWait = TimeSpan.FromMilliseconds(50) };
        for (var trial = 0; trial < trials && writers.Errors.IsEmpty; trial++)
        {
            await admin.Resharding.RefreshMapAsync();
            var from = random.Next(2);
            var owned = admin.Map.Buckets!.BucketsOf(from);
            if (owned.Count < 2)
            {
                from = 1 - from;
                owned = admin.Map.Buckets.BucketsOf(from);
            }

            var buckets = owned.OrderBy(_ => random.Next()).Take(random.Next(1, 4)).ToArray();
            var stopAt = (MoveState)random.Next((int)MoveState.Copying, (int)MoveState.Done + 1); // Done: not stopped
            var cut = random.Next(3) == 0; // else the mover is killed
            using var kill = new CancellationTokenSource();
            string? moveId = null;
            Task? cutting = null;
            try
            {
                await admin.Resharding.MoveBucketsAsync(buckets, $"s{1 - from}", options, new InlineProgress(p =>
                {
                    moveId = p.MoveId;
                    if (p.State == stopAt && stopAt != MoveState.Done)
                    {
                        if (!cut)
                        {
                            kill.Cancel();
                        }
                        else
                        {
                            cutting ??= CutReplicationAsync(shards, from);
                        }
                    }
                }), kill.Token);
                outcomes.Add(cutting is null ? $"{trial}: done" : $"{trial}: stream cut in {stopAt}, done");
                continue;
            }
            catch (OperationCanceledException) when (!cut)
            {
                // the mover was killed
            }
            catch (Exception e) when (cut && e is ShardKitException or Npgsql.NpgsqlException)
            {
                // the mover failed on the cut connection: what it recorded is resumed or cancelled below
            }
            finally
            {
                if (cutting is not null)
                {
                    await cutting;
                }
            }

            if (moveId is null)
            {
                outcomes.Add($"{trial}: failed before it was recorded");
                continue;
            }

            var move = (await admin.Resharding.GetMovesAsync()).Single(m => m.MoveId == moveId);
            if (random.Next(2) == 0 && move.State is not (MoveState.Switched or MoveState.Done))
            {
                await admin.Resharding.CancelMoveAsync(move.MoveId);
                outcomes.Add($"{trial}: stopped in {move.State}, cancelled");
            }
            else
            {
                await admin.Resharding.ResumeMoveAsync(move.MoveId, options);
                outcomes.Add($"{trial}: stopped in {move.State}, resumed");
            }
        }

        await Task.Delay(200);
        await writers.StopAsync();
        TestContext.Out.WriteLine(string.Join("\n", outcomes));
        TestContext.Out.WriteLine($"{writers.Operations} writes, {writers.Refused} distributed or bulk writes refused by a fence and tried again");
        Assert.That(writers.Errors, Is.Empty, string.Join("\n", writers.Errors.Select(e => e.ToString())));
        Assert.That(outcomes, Has.Count.EqualTo(trials));
        foreach (var (key, value) in writers.Truth)
        {
            truth[key] = value;
        }

        await MoveTests.AssertPlacedAsync(shards, admin, truth);
        await using (var source = await shards.OpenAsync(0))
        {
            Assert.That(await source.ExecuteScalarAsync<long>("select count(*) from pg_replication_slots where database = current_database()"), Is.EqualTo(0));
        }

        await using (var other = await shards.OpenAsync(1))
        {
            Assert.That(await other.ExecuteScalarAsync<long>("select count(*) from pg_replication_slots where database = current_database()"), Is.EqualTo(0));
        }
        Assert.That((await admin.Resharding.GetMovesAsync()).Select(m => m.State), Is.All.AnyOf(MoveState.Done, MoveState.Cancelled));
    }

    // A connection cut: the source's walsender for this database's slot is terminated, as a network fault would end it.
    private static async Task CutReplicationAsync(ReshardingShards shards, int source)
    {
        await using var connection = await shards.OpenAsync(source);
        await connection.ExecuteAsync(
            "select pg_terminate_backend(active_pid) from pg_replication_slots where database = current_database() and active_pid is not null");
    }
}

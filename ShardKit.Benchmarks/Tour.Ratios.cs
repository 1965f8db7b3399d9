using System.Diagnostics;
using Dapper;
using ShardKit.Tests.Harness;

namespace ShardKit.Benchmarks;

public static partial class Tour
{
    private sealed record Ratio(string Scenario, string Baseline, double Value, string Note);

    private static async Task<List<Ratio>> MeasureRatiosAsync(BenchmarkShards shards, TestShardSet set)
    {
        var ratios = new List<Ratio>();
        var owner = shards.Source.GetShardDataSource(shards.Source.ShardFor(42L));
        const string sql = "select * from tour_orders where customer_id = @CustomerId";
        var routed = await TimeAsync("Measuring routed point query vs raw Dapper", 400, async () =>
        {
            await using var db = shards.Source.CreateConnection();
            await db.QueryAsync<BenchOrder>(sql, new { CustomerId = 42L });
        }, async () =>
        {
            await using var connection = await owner.OpenConnectionAsync();
            await connection.QueryAsync<BenchOrder>(sql, new { CustomerId = 42L });
        });
        ratios.Add(new Ratio("routed point query", "raw Dapper on the owning shard", routed, "lower is better; 1.00 = no overhead"));

        // Remote shards: the same servers behind proxies adding 2 ms each way.
        await using (var remote = await BenchmarkShards.StartAsync(4, TimeSpan.FromMilliseconds(2)))
        {
            var direct = remote.Source.Map.ShardNames.Select(remote.Source.GetShardDataSource).ToArray();
            var plan = NewestFirst.Take(50);
            const string newest = "select * from tour_orders order by created_at desc, id desc limit @Take";
            Func<Task> fanOut = async () =>
            {
                await using var db = remote.Source.CreateConnection();
                await db.AllShards().QueryAsync(newest, new { Take = plan.ShardLimit }, plan);
            };
            Func<Task> loop = async () =>
            {
                var rows = new List<BenchOrder>();
                foreach (var shard in direct)
                {
                    await using var connection = await shard.OpenConnectionAsync();
                    rows.AddRange(await connection.QueryAsync<BenchOrder>(newest, new { Take = 50 }));
                }

                _ = rows.OrderByDescending(o => o.CreatedAt).ThenByDescending(o => o.Id).Take(50).ToList();
            };
            Func<Task> one = async () =>
            {
                await using var connection = await direct[0].OpenConnectionAsync();
                await connection.QueryAsync<BenchOrder>(newest, new { Take = 50 });
            };
            var vsLoop = await TimeAsync("Measuring fan-out over 4 shards (2 ms away) vs a sequential loop", 60, fanOut, loop);
            ratios.Add(new Ratio("fan-out, newest 50 of 4 shards", "sequential loop over the shards", vsLoop, "lower is better"));
            var vsOne = await TimeAsync("Measuring the same fan-out vs the read on one shard", 60, fanOut, one);
            ratios.Add(new Ratio("fan-out, newest 50 of 4 shards", "the same read on one shard", vsOne, "target at most 1.3"));
            // The floor on this machine: the four reads at once by hand, without ShardKit.
            Func<Task> byHand = async () =>
            {
                var parts = await Task.WhenAll(direct.Select(async shard =>
                {
                    await using var connection = await shard.OpenConnectionAsync();
                    return await connection.QueryAsync<BenchOrder>(newest, new { Take = 50 });
                }));
                _ = parts.SelectMany(p => p).OrderByDescending(o => o.CreatedAt).ThenByDescending(o => o.Id).Take(50).ToList();
            };
            var floor = await TimeAsync("Measuring four reads at once by hand (no ShardKit) vs the read on one shard", 60, byHand, one);
            ratios.Add(new Ratio("same, 4 reads at once by hand", "the same read on one shard", floor, "no ShardKit: the floor of the line above here"));
        }

        var bulk = new BulkLoadBenchmarks();
        await bulk.SetupAsync();
        var copies = await TimeAsync("Measuring bulk load into 4 shards vs one raw COPY (100,000 rows)", 3,
            async () => { await bulk.ShardKitCopyAsync(); bulk.IterationCleanup(); },
            async () => { await bulk.RawCopyAsync(); bulk.IterationCleanup(); });
        ratios.Add(new Ratio("bulk load, 100k rows, 4 shards", "one raw binary COPY into one server", copies, "time; below 1.25 = at least 0.8x the rows/s"));
        await bulk.CleanupAsync();

        var commits = new DistributedCommitBenchmarks();
        await commits.SetupAsync();
        var twoPhase = await TimeAsync("Measuring a two-shard distributed commit vs a one-shard commit", 100,
            async () => await commits.ShardKitTwoShardsAsync(), commits.RawDapperOneShardAsync);
        ratios.Add(new Ratio("distributed commit, 2 local shards", "Npgsql transaction on one shard", twoPhase, "CPU-bound here; 1.7-2.0 at 1 ms in the suite"));
        await commits.CleanupAsync();

        var merge = new OrderedMergeBenchmarks { Shards = 8 };
        merge.Setup();
        var merged = await TimeAsync("Measuring k-way merge of 1,000,000 rows vs concat + sort", 3,
            async () => await merge.KWayMergeAsync(), () => Task.FromResult(merge.ConcatAndSort()));
        ratios.Add(new Ratio("ordered merge, 1M rows, 8 shards", "concat + LINQ OrderBy", merged, "time; memory stays O(shards)"));
        return ratios;
    }

    // Alternates the two sides in rounds so machine noise hits both alike; returns median(candidate) / median(baseline).
    private static async Task<double> TimeAsync(string title, int iterations, Func<Task> candidate, Func<Task> baseline)
    {
        return await Step(title, async () =>
        {
            var a = new List<double>();
            var b = new List<double>();
            for (var i = 0; i < Math.Min(20, iterations); i++)
            {
                await candidate();
                await baseline();
            }

            for (var round = 0; round < iterations; round++)
            {
                var t = Stopwatch.GetTimestamp();
                await candidate();
                a.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
                t = Stopwatch.GetTimestamp();
                await baseline();
                b.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
            }

            return Interleaved.Median(a) / Interleaved.Median(b);
        });
    }

    private static void PrintRatios(List<Ratio> ratios)
    {
        Console.WriteLine();
        Console.WriteLine("Headline ratios (quick medians; the BenchmarkDotNet suites give the careful numbers):");
        Console.WriteLine($"  {"scenario",-34} {"vs baseline",-40} {"ratio",7}  note");
        foreach (var r in ratios)
        {
            Console.WriteLine($"  {r.Scenario,-34} {r.Baseline,-40} {r.Value,7:0.00}  {r.Note}");
        }
    }
}

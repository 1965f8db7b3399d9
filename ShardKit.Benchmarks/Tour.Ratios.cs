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
        return ratios;
    }

    // Alternates the two sides in rounds so machine noise hits both alike; returns median(candidate) / median(baseline).
    private static async Task<double> TimeAsync(string title, int iterations, Func<Task> candidate, Func<Task> baseline)
    {
        return await Step(title, async () =>
        {
            var a = new List<double>();
            var b = new List<double>();
            for (var i = 0; i < 20; i++)
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

            return Median(a) / Median(b);
        });
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
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

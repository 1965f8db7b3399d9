using System.Diagnostics;

namespace ShardKit.Benchmarks;

/// <summary>
/// Quick A/B checks outside BenchmarkDotNet: the two sides run alternately in one process, so that what the machine does
/// meanwhile falls on both, and each side's median is kept with the process's CPU time it took.
/// </summary>
internal static class Interleaved
{
    /// <summary>Untimed runs of each side before the timed ones, so both run code the JIT has finished tiering.</summary>
    public const int WarmUps = 5;

    /// <summary>
    /// The median wall-clock and client-CPU milliseconds of each side over <paramref name="rounds"/> alternations, after
    /// <see cref="WarmUps"/> untimed runs of each (one was too few: a 2PC run's first comparison measured ShardKit's
    /// client CPU at 0.99 ms per commit, 0.69 ms once its code had reached its final tier).
    /// </summary>
    /// <param name="between">Runs after every timed run, untimed (a truncate between writes).</param>
    public static async Task<(double Mine, double Loop, double MineCpu, double LoopCpu)> RunAsync(int rounds, Func<Task> mine, Func<Task> loop,
        Func<Task>? between = null)
    {
        var (a, b, cpuA, cpuB) = (new List<double>(), new List<double>(), new List<double>(), new List<double>());
        for (var warm = 0; warm < WarmUps; warm++)
        {
            await mine();
            await (between?.Invoke() ?? Task.CompletedTask);
            await loop();
            await (between?.Invoke() ?? Task.CompletedTask);
        }

        for (var round = 0; round < rounds; round++)
        {
            a.Add(await TimeAsync(mine, cpuA));
            await (between?.Invoke() ?? Task.CompletedTask);
            b.Add(await TimeAsync(loop, cpuB));
            await (between?.Invoke() ?? Task.CompletedTask);
        }

        return (Median(a), Median(b), Median(cpuA), Median(cpuB));
    }

    public static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }

    // Wall-clock milliseconds; the process's CPU milliseconds (this client's cost, GC included) into cpu.
    private static async Task<double> TimeAsync(Func<Task> run, List<double> cpu)
    {
        // As BenchmarkDotNet does between iterations: neither side pays for the other's garbage.
        GC.Collect();
        var process = Process.GetCurrentProcess();
        var cpuBefore = process.TotalProcessorTime;
        var pauseBefore = GC.GetTotalPauseDuration();
        var gen2Before = GC.CollectionCount(2);
        var t = Stopwatch.GetTimestamp();
        await run();
        var wall = Stopwatch.GetElapsedTime(t).TotalMilliseconds;
        process.Refresh();
        cpu.Add((process.TotalProcessorTime - cpuBefore).TotalMilliseconds);
        if (Environment.GetEnvironmentVariable("SHARDKIT_GC_TRACE") == "1")
        {
            Console.WriteLine($"    {wall,8:F1} ms, GC pause {(GC.GetTotalPauseDuration() - pauseBefore).TotalMilliseconds:F1} ms, gen2 {GC.CollectionCount(2) - gen2Before}");
        }

        return wall;
    }
}

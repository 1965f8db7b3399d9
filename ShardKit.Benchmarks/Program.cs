using BenchmarkDotNet.Running;
using ShardKit.Benchmarks;

// No arguments: the short tour on local shards. Any arguments: BenchmarkDotNet (e.g. -- --filter '*').
if (args.Length == 0)
{
    return await Tour.RunAsync();
}

// The quick checks outside BenchmarkDotNet (README, Performance).
Func<string[], Task>? check = args[0] switch
{
    "fanout" => FanOutBenchmarks.RatiosAsync,
    "fanout-rows" => FanOutRowsBenchmarks.RatiosAsync,
    "batch" => BatchWriteBenchmarks.RatiosAsync,
    "commit" => DistributedCommitBenchmarks.RatiosAsync,
    "move-pause" => MovePauseRun.RunAsync,
    "move-copy" => MoveCopyBenchmarks.RatiosAsync,
    _ => null,
};
if (check is not null)
{
    await check(args);
    return 0;
}

BenchmarkSwitcher.FromAssembly(typeof(Tour).Assembly).Run(args);
return 0;

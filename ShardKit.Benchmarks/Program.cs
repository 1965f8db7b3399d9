using ShardKit.Tests.Harness;

var shards = await TestShards.GetAsync();
Console.WriteLine($"{shards.Count} shards from {shards.Source}");
await TestShards.ShutdownAsync();

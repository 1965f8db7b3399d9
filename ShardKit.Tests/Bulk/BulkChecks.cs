namespace ShardKit.Tests.Bulk;

/// <summary>What really landed on each shard, read directly from the servers, bypassing ShardKit.</summary>
internal static class BulkChecks
{
    public static async Task<Dictionary<string, long>> CountsAsync(ShardTestContext ctx)
    {
        var counts = new Dictionary<string, long>();
        foreach (var shard in ctx.Shards.Names)
        {
            counts[shard] = (await ctx.DirectAsync<long>(shard, $"select count(*) from {ctx.Table}"))[0];
        }

        return counts;
    }

    public static async Task<long> TotalAsync(ShardTestContext ctx) => (await CountsAsync(ctx)).Values.Sum();
}

using Dapper;
using ShardKit.Tests.Resharding;
using ShardKit.Tool;

namespace ShardKit.Tests.Tool;

[TestFixture]
public sealed class ReshardingToolTests
{
    private static string[] Args(ReshardingShards shards, params string[] command) =>
        [.. command, .. shards.Direct.SelectMany((cs, i) => new[] { "--shard", $"s{i}={cs}" }), "--catalog", "s0", "--hash-buckets", shards.Buckets.ToString(System.Globalization.CultureInfo.InvariantCulture)];

    [Test]
    public async Task Seed_move_list_audit_and_show_run_a_move_end_to_end_with_progress()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        await using (var s0 = await shards.OpenAsync(0))
        {
            // Keys in bucket range 0..3 of 64 all live on s0 at first.
            await s0.ExecuteAsync("insert into items (id, payload) select g, 'row ' || g from generate_series(1, 2000) g " +
                                  "where ((hashint8(g)::bigint + 2147483648) * 64 >> 32) < 32");
        }

        var seed = await ToolRun.RunAsync(Args(shards, "map", "seed", "--table", "items:id"));
        Assert.That(seed.ExitCode, Is.EqualTo(ExitCodes.Ok), seed.ToString());
        Assert.That(seed.Output, Does.Contain("epoch 1"));

        var move = await ToolRun.RunAsync(Args(shards, "move", "start", "--buckets", "0-3", "--to", "s1"));
        Assert.That(move.ExitCode, Is.EqualTo(ExitCodes.Ok), move.ToString());
        Assert.That(move.Output, Does.Contain("Copying").And.Contain("Done").And.Contain("pause"));

        var list = await ToolRun.RunAsync(Args(shards, "move", "list"));
        Assert.That(list.Output, Does.Contain("Done").And.Contain("0,1,2,3"), list.ToString());
        var audit = await ToolRun.RunAsync(Args(shards, "map", "audit"));
        Assert.That(audit.ExitCode, Is.EqualTo(ExitCodes.Ok), audit.ToString());
        var show = await ToolRun.RunAsync(Args(shards, "map", "show"));
        Assert.That(show.Output, Does.Contain("stored map epoch"), show.ToString());
        Assert.That(await shards.ScalarAsync<long>(1, "select count(*) from items"), Is.GreaterThan(0));
        Assert.That((await shards.AllRowsAsync()).Count, Is.EqualTo(await shards.ScalarAsync<long>(0, "select count(*) from items") + await shards.ScalarAsync<long>(1, "select count(*) from items")));
    }

    [Test]
    public async Task Bad_arguments_say_what_to_write()
    {
        await using var shards = await ReshardingShards.CreateAsync(2);
        var buckets = await ToolRun.RunAsync(Args(shards, "move", "start", "--buckets", "3-1", "--to", "s1"));
        Assert.That(buckets.ExitCode, Is.EqualTo(ExitCodes.Usage));
        Assert.That(buckets.Error, Does.Contain("--buckets 10-19"));

        var table = await ToolRun.RunAsync(Args(shards, "map", "seed", "--table", "items"));
        Assert.That(table.ExitCode, Is.EqualTo(ExitCodes.Usage));
        Assert.That(table.Error, Does.Contain("TABLE:KEY_COLUMN"));

        var noCatalog = await ToolRun.RunAsync("move", "list", "--shard", $"s0={shards.Direct[0]}");
        Assert.That(noCatalog.ExitCode, Is.EqualTo(ExitCodes.Usage), noCatalog.ToString());
        Assert.That(noCatalog.Error, Does.Contain("--catalog"));

        var unknown = await ToolRun.RunAsync(Args(shards, "move", "resume", "m0"));
        Assert.That(unknown.ExitCode, Is.Not.EqualTo(ExitCodes.Ok), unknown.ToString());
    }
}

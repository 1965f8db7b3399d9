using System.Diagnostics;
using Microsoft.Extensions.Logging;
using ShardKit.Tests.Telemetry;

namespace ShardKit.Tests.Bulk;

[NonParallelizable] // listeners are process-wide: other tests' loads would show up in the captures
public sealed class BulkInsertTelemetryTests
{
    [Test]
    public async Task A_load_emits_a_parent_span_one_span_per_shard_with_its_rows_and_a_row_counter()
    {
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        using var capture = new TelemetryCapture();
        await using var source = Rebuild(ctx, capture);
        await using var db = source.CreateConnection();

        var result = await db.BulkInsertAsync(ctx.Table, BulkOrder.Many(5000));

        var parent = capture.Activities.Single(a => a.DisplayName == "ShardKit bulk insert");
        Assert.That(parent.GetTagItem("db.collection.name"), Is.EqualTo(ctx.Table));
        Assert.That(parent.Kind, Is.EqualTo(ActivityKind.Internal));
        Assert.That(parent.GetTagItem("shardkit.operation"), Is.EqualTo("BulkInsert"));
        Assert.That(parent.GetTagItem("db.system.name"), Is.Null); // its COPY children are the database calls
        Assert.That(parent.GetTagItem("shardkit.rows"), Is.EqualTo(5000L));
        var children = capture.Activities.Where(a => a.ParentSpanId == parent.SpanId).ToList();
        Assert.That(children.Select(c => c.GetTagItem("shardkit.shard")), Is.EquivalentTo(ctx.Shards.Names));
        Assert.That(children.Select(c => (c.Kind, c.DisplayName)), Is.All.EqualTo((ActivityKind.Client, $"COPY {ctx.Table}")));
        Assert.That(capture.Measurements.Where(m => m.Name == "shardkit.operation.duration").Select(m => m.Tags.Single(t => t.Key == "shardkit.shard").Value),
            Is.EquivalentTo(ctx.Shards.Names));
        foreach (var child in children)
        {
            Assert.That(child.GetTagItem("shardkit.rows"), Is.EqualTo(result.RowsPerShard[(string)child.GetTagItem("shardkit.shard")!]));
        }

        var counted = capture.Measurements.Where(m => m.Name == "shardkit.bulk.rows").ToList();
        Assert.That(counted.Sum(m => m.Value), Is.EqualTo(5000));
        Assert.That(counted.Select(m => m.Tags.Single(t => t.Key == "shardkit.shard").Value), Is.EquivalentTo(ctx.Shards.Names));
        Assert.That(capture.Logs.Select(l => l.EventId), Has.Member(1403));
    }

    [Test]
    public async Task A_failed_load_marks_its_span_failed_counts_no_rows_and_logs_a_warning()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (tenant text, id bigint)", stem: "bulk");
        using var capture = new TelemetryCapture();
        await using var source = Rebuild(ctx, capture);
        await using var db = source.CreateConnection();
        var rows = Enumerable.Range(0, 3000).Select(i => new BulkInsertInputErrorTests.Tenanted { Tenant = i == 2000 ? null : "t" + i, Id = i });

        Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows));

        var parent = capture.Activities.Single(a => a.DisplayName == "ShardKit bulk insert");
        Assert.That(parent.Status, Is.EqualTo(ActivityStatusCode.Error));
        Assert.That(parent.GetTagItem("error.type"), Is.EqualTo(typeof(BulkInsertException).FullName));
        Assert.That(capture.Measurements.Where(m => m.Name == "shardkit.bulk.rows"), Is.Empty);
        var warning = capture.Logs.Single(l => l.EventId == 1401);
        Assert.That(warning.Level, Is.EqualTo(LogLevel.Warning));
        Assert.That(warning.Message, Does.Contain(ctx.Table).And.Not.Contain("t1999"));
    }

    private static ShardedDataSource Rebuild(ShardTestContext ctx, TelemetryCapture capture)
    {
        var builder = new ShardedDataSourceBuilder().UseLoggerFactory(capture);
        for (var i = 0; i < ctx.Shards.Count; i++)
        {
            builder.AddShard(ctx.Shards.Names[i], ctx.Shards.ConnectionStrings[i]);
        }

        return builder.Build();
    }
}

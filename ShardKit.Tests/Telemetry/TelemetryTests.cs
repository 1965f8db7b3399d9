using System.Diagnostics;

namespace ShardKit.Tests.Telemetry;

[NonParallelizable] // listeners are process-wide: other tests' commands would show up in the captures
public sealed class TelemetryTests
{
    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
        public string Secret { get; init; } = "";
    }

    [Test]
    public async Task A_routed_command_emits_a_span_with_database_tags_and_a_duration_measurement()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, secret text)");
        await using var db = ctx.Source.CreateConnection();
        using var capture = new TelemetryCapture();

        await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Secret)", new Row { CustomerId = 770077, Secret = "tops3cret-value" });

        var span = capture.Activities.Single(a => a.DisplayName == $"INSERT {ctx.Table}");
        Assert.That(span.Kind, Is.EqualTo(ActivityKind.Client));
        Assert.That(span.GetTagItem("db.system.name"), Is.EqualTo("postgresql"));
        Assert.That(span.GetTagItem("db.operation.name"), Is.EqualTo("INSERT"));
        Assert.That(span.GetTagItem("shardkit.operation"), Is.EqualTo("Execute"));
        Assert.That(span.GetTagItem("shardkit.shard"), Is.EqualTo(ctx.Source.ShardFor(770077L)));
        Assert.That(capture.Measurements.Where(m => m.Name == "shardkit.operation.duration"), Is.Not.Empty);
        Assert.That(capture.AllText(), Has.None.Contains("tops3cret-value").And.None.Contains("770077"));
        // The key is distinctive on purpose: the capture sees every test running at once, and a port may contain "77".
    }

    [Test]
    public async Task A_fan_out_emits_a_parent_span_with_one_child_per_shard_and_its_width()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint)");
        await using var db = ctx.Source.CreateConnection();
        using var capture = new TelemetryCapture();

        await db.AllShards().ExecuteAsync($"delete from {ctx.Table} where customer_id = @Id", new { Id = 123456789L });

        var parent = capture.Activities.Single(a => a.DisplayName == "ShardKit fan-out Execute");
        var children = capture.Activities.Where(a => a.ParentSpanId == parent.SpanId).ToList();
        Assert.That(parent.Kind, Is.EqualTo(ActivityKind.Internal));
        Assert.That(parent.GetTagItem("shardkit.shard_count"), Is.EqualTo(ctx.Shards.Count));
        Assert.That(children.Select(c => (c.Kind, c.DisplayName)), Is.All.EqualTo((ActivityKind.Client, $"DELETE {ctx.Table}")));
        Assert.That(children.Select(c => c.GetTagItem("shardkit.shard")), Is.EquivalentTo(ctx.Shards.Names));
        Assert.That(capture.Measurements.Where(m => m.Name == "shardkit.fanout.width").Select(m => m.Value), Has.Member((double)ctx.Shards.Count));
        Assert.That(capture.AllText(), Has.None.Contains("123456789"));
    }

    [Test]
    public async Task Nothing_captured_contains_a_connection_password()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint)",
            configure: null);
        using var capture = new TelemetryCapture();
        var builder = new ShardedDataSourceBuilder();
        for (var i = 0; i < ctx.Shards.Count; i++)
        {
            builder.AddShard(ctx.Shards.Names[i], ctx.Shards.ConnectionStrings[i] + ";Password=hunter2-pw");
        }

        await using var source = builder.Build();
        await using var db = source.CreateConnection();
        await db.ForKey(1L).ExecuteAsync("select 1");
        await db.AllShards().ExecuteAsync("select 1");
        Assert.That(capture.AllText(), Has.None.Contains("hunter2-pw"));
    }

    [Test]
    public async Task Distributed_transactions_count_their_outcome_and_emit_a_span_tagged_with_it()
    {
        await using var s = await Distributed.DistributedShards.SharedAsync(2);
        await using var db = s.Source.CreateConnection();
        using var capture = new TelemetryCapture();
        var rows = new[] { new Distributed.DistributedShards.Row { CustomerId = s.KeyOn(0), Id = 1 }, new Distributed.DistributedShards.Row { CustomerId = s.KeyOn(1), Id = 1 } };

        await using (var tx = await db.BeginDistributedTransactionAsync())
        {
            await db.ExecuteAsync($"insert into {s.Table} values (@CustomerId, @Id)", rows);
            await tx.CommitAsync();
        }

        await using (var tx = await db.BeginDistributedTransactionAsync())
        {
            await db.ExecuteAsync($"insert into {s.Table} values (@CustomerId, @Id)", rows);
            await tx.RollbackAsync();
        }

        var outcomes = capture.Measurements.Where(m => m.Name == "shardkit.distributed_transaction.outcomes")
            .Select(m => m.Tags.Single(t => t.Key == "shardkit.outcome").Value).ToArray();
        Assert.That(outcomes, Is.EquivalentTo(new[] { "committed", "rolled_back" }));
        var commit = capture.Activities.Single(a => a.DisplayName == "ShardKit distributed commit");
        Assert.That(commit.GetTagItem("shardkit.outcome"), Is.EqualTo("committed"));
        Assert.That(commit.GetTagItem("shardkit.shard_count"), Is.EqualTo(2));
    }
}

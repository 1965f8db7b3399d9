using System.Diagnostics;
using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Tests.Telemetry;

/// <summary>
/// The spans and measurements an OpenTelemetry exporter sees, checked attribute by attribute against the database
/// client conventions, with real listeners on real shards.
/// </summary>
[NonParallelizable] // listeners are process-wide: other tests' commands would show up in the captures
public sealed class DatabaseConventionsTests
{
    public sealed class Row
    {
        [ShardKey] public long CustomerId { get; init; }
        public string Note { get; init; } = "";
    }

    [Test]
    public async Task A_routed_read_is_one_client_span_with_exactly_the_conventions_attributes_and_a_tagged_duration()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, note text)");
        await using var db = ctx.Source.CreateConnection();
        await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Note)", new Row { CustomerId = 5, Note = "n" });
        using var capture = new TelemetryCapture();

        var rows = await db.QueryAsync<Row>($"select customer_id, note from {ctx.Table} where customer_id = @CustomerId", new { CustomerId = 5L });

        Assert.That(rows.Single().Note, Is.EqualTo("n"));
        var shard = ctx.Source.ShardFor(5L);
        var span = capture.Activities.Single();
        Assert.That(span.DisplayName, Is.EqualTo($"SELECT {ctx.Table}"));
        Assert.That(span.Kind, Is.EqualTo(ActivityKind.Client));
        Assert.That(span.Status, Is.EqualTo(ActivityStatusCode.Unset));
        Assert.That(Tags(span), Is.EquivalentTo(ClientTags(ctx, shard, "SELECT", "Query")));
        var duration = capture.Measurements.Single(m => m.Name == "shardkit.operation.duration");
        Assert.That(duration.Tags, Is.EquivalentTo(new Dictionary<string, object?>
        {
            ["shardkit.shard"] = shard,
            ["db.operation.name"] = "SELECT",
            ["db.collection.name"] = ctx.Table,
        }));
        Assert.That(duration.Value, Is.GreaterThan(0).And.LessThan(span.Duration.TotalSeconds + 0.001));
    }

    [Test]
    public async Task A_fan_out_read_has_an_internal_parent_a_client_span_and_a_duration_per_shard_and_tagged_counts()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, note text)");
        await using var db = ctx.Source.CreateConnection();
        await db.ExecuteAsync($"insert into {ctx.Table} values (@CustomerId, @Note)",
            Enumerable.Range(1, 40).Select(i => new Row { CustomerId = i, Note = "n" }));
        using var capture = new TelemetryCapture();

        var result = await db.AllShards().QueryAsync<Row>($"select customer_id, note from {ctx.Table}");

        Assert.That(result, Has.Count.EqualTo(40));
        var parent = capture.Activities.Single(a => a.Kind == ActivityKind.Internal);
        Assert.That(parent.DisplayName, Is.EqualTo("ShardKit fan-out Query"));
        Assert.That(Tags(parent), Is.EquivalentTo(new Dictionary<string, object?>
        {
            ["shardkit.operation"] = "Query",
            ["shardkit.shard_count"] = ctx.Shards.Count,
            ["shardkit.merge"] = "concat",
            ["shardkit.rows"] = 40L,
        }));
        var children = capture.Activities.Where(a => a.Kind == ActivityKind.Client).ToList();
        Assert.That(children.Select(c => c.ParentSpanId), Is.All.EqualTo(parent.SpanId));
        Assert.That(children.Select(c => c.DisplayName), Is.All.EqualTo($"SELECT {ctx.Table}"));
        foreach (var child in children)
        {
            Assert.That(Tags(child), Is.EquivalentTo(ClientTags(ctx, (string)child.GetTagItem("shardkit.shard")!, "SELECT", "Query")));
        }

        var durations = capture.Measurements.Where(m => m.Name == "shardkit.operation.duration").ToList();
        Assert.That(durations.Select(d => Tag(d.Tags, "shardkit.shard")), Is.EquivalentTo(ctx.Shards.Names));
        Assert.That(durations.Select(d => Tag(d.Tags, "db.operation.name")), Is.All.EqualTo("SELECT"));
        var width = capture.Measurements.Single(m => m.Name == "shardkit.fanout.width");
        Assert.That(width.Value, Is.EqualTo(ctx.Shards.Count));
        Assert.That(width.Tags, Is.EquivalentTo(new Dictionary<string, object?> { ["shardkit.operation"] = "Query", ["db.operation.name"] = "SELECT" }));
        var merged = capture.Measurements.Single(m => m.Name == "shardkit.merge.rows");
        Assert.That(merged.Value, Is.EqualTo(40));
        Assert.That(merged.Tags, Is.EquivalentTo(new Dictionary<string, object?> { ["shardkit.merge"] = "concat", ["shardkit.operation"] = "Query" }));
    }

    [Test]
    public async Task A_command_the_server_refuses_marks_its_span_failed_with_the_sqlstate_and_counts_it()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, note text)");
        await using var db = ctx.Source.CreateConnection();
        using var capture = new TelemetryCapture();

        var error = Assert.ThrowsAsync<PostgresException>(async () =>
            await db.QueryAsync<Row>($"select no_such_column from {ctx.Table} where customer_id = @CustomerId", new { CustomerId = 5L }));

        Assert.That(error!.SqlState, Is.EqualTo(PostgresErrorCodes.UndefinedColumn));
        var shard = ctx.Source.ShardFor(5L);
        var span = capture.Activities.Single();
        Assert.That(span.Status, Is.EqualTo(ActivityStatusCode.Error));
        var expected = ClientTags(ctx, shard, "SELECT", "Query");
        expected["error.type"] = "42703";
        expected["db.response.status_code"] = "42703";
        Assert.That(Tags(span), Is.EquivalentTo(expected));
        var duration = capture.Measurements.Single(m => m.Name == "shardkit.operation.duration");
        Assert.That(Tag(duration.Tags, "error.type"), Is.EqualTo("42703"));
        var failure = capture.Measurements.Single(m => m.Name == "shardkit.shard.failures");
        Assert.That(failure.Tags, Is.EquivalentTo(new Dictionary<string, object?> { ["shardkit.shard"] = shard, ["error.type"] = "42703" }));
    }

    [Test]
    public async Task A_shard_that_cannot_be_reached_is_an_error_typed_by_its_exception_without_a_status_code()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint)");
        var dead = LocalPostgresCluster.ConnectionStringFor(FreePort.Next()) + ";Timeout=2";
        await using var source = new ShardedDataSourceBuilder().AddShard("dead", dead).Build();
        await using var db = source.CreateConnection();
        db.Retries = ShardRetryOptions.None;
        using var capture = new TelemetryCapture();

        Assert.ThrowsAsync<ShardConnectionException>(async () => await db.OnShard("dead").QueryAsync<long>("select 1"));

        var span = capture.Activities.Single();
        Assert.That(span.DisplayName, Is.EqualTo("SELECT"));
        Assert.That(span.Status, Is.EqualTo(ActivityStatusCode.Error));
        Assert.That(span.GetTagItem("error.type"), Is.EqualTo(typeof(ShardConnectionException).FullName));
        Assert.That(span.GetTagItem("db.response.status_code"), Is.Null);
        Assert.That(span.GetTagItem("server.port"), Is.EqualTo(new NpgsqlConnectionStringBuilder(dead).Port));
    }

    [Test]
    public async Task Npgsqls_own_command_span_is_left_out_inside_a_shardkit_span_and_kept_without_one()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (customer_id bigint, note text)");
        await using var db = ctx.Source.CreateConnection();
        var sql = $"select customer_id, note from {ctx.Table} where customer_id = @CustomerId";
        var npgsql = new List<Activity>();
        using var npgsqlListener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Npgsql",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { lock (npgsql) { npgsql.Add(a); } },
        };
        ActivitySource.AddActivityListener(npgsqlListener);

        await db.QueryAsync<Row>(sql, new { CustomerId = 5L }); // nobody listens to ShardKit: Npgsql's span is the client span
        Assert.That(npgsql.Where(a => a.Kind == ActivityKind.Client && a.GetTagItem("db.query.text") as string == sql), Is.Not.Empty);

        npgsql.Clear();
        using (var capture = new TelemetryCapture())
        {
            await db.QueryAsync<Row>(sql, new { CustomerId = 5L });
            await db.AllShards().QueryAsync<Row>($"select customer_id, note from {ctx.Table}");

            var shardKitSpans = capture.Activities.Where(a => a.Kind == ActivityKind.Client).Select(a => a.SpanId).ToHashSet();
            Assert.That(shardKitSpans, Has.Count.EqualTo(1 + ctx.Shards.Count));
            // Only a new physical connection's CONNECT span may sit below ShardKit's: it is another call, not the same one twice.
            Assert.That(npgsql.Where(a => shardKitSpans.Contains(a.ParentSpanId)).Select(a => a.DisplayName), Is.All.StartsWith("CONNECT "));
        }
    }

    [Test]
    public void The_duration_histogram_advises_buckets_for_database_calls_not_the_sdks_0_to_5_seconds_first_bucket()
    {
        Assert.That(ShardKitTelemetry.OperationDuration.Advice?.HistogramBucketBoundaries,
            Is.EqualTo(new[] { 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10 }));
        Assert.That(ShardKitTelemetry.FanOutWidth.Advice?.HistogramBucketBoundaries, Is.EqualTo(new[] { 1, 2, 4, 8, 16, 32, 64, 128, 256 }));
    }

    private static Dictionary<string, object?> ClientTags(ShardTestContext ctx, string shard, string operation, string method)
    {
        var connection = new NpgsqlConnectionStringBuilder(ctx.Shards.ConnectionStrings[ctx.Shards.Names.ToList().IndexOf(shard)]);
        return new Dictionary<string, object?>
        {
            ["db.system.name"] = "postgresql",
            ["db.namespace"] = connection.Database,
            ["server.address"] = connection.Host,
            ["server.port"] = connection.Port,
            ["db.operation.name"] = operation,
            ["db.collection.name"] = ctx.Table,
            ["shardkit.shard"] = shard,
            ["shardkit.operation"] = method,
            ["shardkit.server"] = "primary", // the shared shards have no standbys (ReadReplicaTests covers "standby")
        };
    }

    private static Dictionary<string, object?> Tags(Activity activity) => activity.TagObjects.ToDictionary(t => t.Key, t => t.Value);

    private static object? Tag(KeyValuePair<string, object?>[] tags, string key) => tags.Single(t => t.Key == key).Value;
}

using System.Diagnostics;
using System.Diagnostics.Metrics;
using BenchmarkDotNet.Attributes;
using Dapper;

namespace ShardKit.Benchmarks;

/// <summary>
/// What ShardKit's tracing and metrics cost on the routed point query. They are always compiled in; with no
/// listener (the baseline) an activity is never created and instruments record nothing. The second case attaches
/// an ActivityListener that records every ShardKit activity and a MeterListener reading every ShardKit instrument,
/// as an OpenTelemetry exporter would.
/// </summary>
[MemoryDiagnoser]
public class TelemetryBenchmarks
{
    private const string Sql = "select customer_id, id, total, created_at from bench_telemetry where customer_id = @CustomerId";
    private static readonly ShardInfo Shard = new(0, "s0", "Host=localhost;Database=bench");
    private BenchmarkShards _shards = null!;
    private ActivityListener? _activities;
    private MeterListener? _meters;
    private long _measurements;

    [GlobalSetup(Targets = [nameof(NoListenerAsync), nameof(TelemetryCallsAlone)])]
    public Task SetupQuietAsync() => SetupAsync(listen: false);

    [GlobalSetup(Target = nameof(WithListenersAsync))]
    public Task SetupListenedAsync() => SetupAsync(listen: true);

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        _activities?.Dispose();
        _meters?.Dispose();
        await _shards.OnEveryShardAsync("drop table if exists bench_telemetry");
        await _shards.DisposeAsync();
    }

    [Benchmark(Baseline = true, Description = "routed query, no listener")]
    public Task<int> NoListenerAsync() => QueryAsync();

    [Benchmark(Description = "routed query, activity + meter listeners")]
    public Task<int> WithListenersAsync() => QueryAsync();

    /// <summary>The telemetry a routed command makes, without the command: its share of the query above.</summary>
    [Benchmark(Description = "telemetry calls alone, no listener")]
    public int TelemetryCallsAlone()
    {
        var command = ShardKitTelemetry.Summarize(Sql);
        using var activity = ShardKitTelemetry.StartCommand("Query", Shard, command);
        ShardKitTelemetry.RecordDuration(Shard.Name, command, Stopwatch.GetTimestamp());
        return activity is null ? 0 : 1;
    }

    private async Task<int> QueryAsync()
    {
        await using var db = _shards.Source.CreateConnection();
        return (await db.QueryAsync<BenchOrder>(Sql, new { CustomerId = 42L })).AsList().Count;
    }

    private async Task SetupAsync(bool listen)
    {
        _shards = await BenchmarkShards.StartAsync();
        await _shards.OnEveryShardAsync("drop table if exists bench_telemetry; create table bench_telemetry (customer_id bigint, id bigint, total numeric, created_at timestamp, primary key (customer_id, id))");
        await using (var db = _shards.Source.CreateConnection())
        {
            await db.ExecuteAsync("insert into bench_telemetry values (@CustomerId, @Id, @Total, @CreatedAt)",
                Enumerable.Range(1, 100).Select(i => new BenchOrder { CustomerId = 42, Id = i, Total = i, CreatedAt = DateTime.UnixEpoch.AddHours(i) }));
        }

        if (listen)
        {
            _activities = new ActivityListener
            {
                ShouldListenTo = source => source.Name == ShardKitInfo.Name,
                Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            };
            ActivitySource.AddActivityListener(_activities);
            _meters = new MeterListener
            {
                InstrumentPublished = (instrument, listener) =>
                {
                    if (instrument.Meter.Name == ShardKitInfo.Name)
                    {
                        listener.EnableMeasurementEvents(instrument);
                    }
                },
            };
            _meters.SetMeasurementEventCallback<double>((_, _, _, _) => Interlocked.Increment(ref _measurements));
            _meters.SetMeasurementEventCallback<long>((_, _, _, _) => Interlocked.Increment(ref _measurements));
            _meters.SetMeasurementEventCallback<int>((_, _, _, _) => Interlocked.Increment(ref _measurements));
            _meters.Start();
        }

        // The benchmark measures the path the tests check: 100 rows, and with listeners, measurements really arrive.
        var before = Interlocked.Read(ref _measurements);
        if (await QueryAsync() != 100 || (listen && Interlocked.Read(ref _measurements) == before))
        {
            throw new InvalidOperationException("The routed query or its telemetry does not behave as the tests expect.");
        }
    }
}

using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Reflection;
using Npgsql;

namespace ShardKit;

/// <summary>
/// ShardKit's <see cref="ActivitySource"/> and <see cref="Meter"/>, both named <c>ShardKit</c>. Tags follow
/// OpenTelemetry's database conventions plus <c>shardkit.*</c> for sharding; never parameter values or passwords.
/// With no listener attached, starting an activity returns null and recording a measurement is a flag check.
/// </summary>
internal static class ShardKitTelemetry
{
    public static readonly string Version =
        typeof(ShardKitTelemetry).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    /// <summary>The operation name of a bulk load in telemetry and logs.</summary>
    public const string BulkInsertOperation = "BulkInsert";

    public static readonly ActivitySource Source = new(ShardKitInfo.Name, Version);

    public static readonly Meter Meter = new(ShardKitInfo.Name, Version);

    // OpenTelemetry's advice for database call durations; the SDK's default buckets put 0–5 s in the first one.
    private static readonly double[] DurationBuckets = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10];

    public static readonly Histogram<double> OperationDuration = Meter.CreateHistogram(
        "shardkit.operation.duration", unit: "s", description: "Duration of one command on one shard.",
        tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DurationBuckets });

    public static readonly Histogram<int> FanOutWidth = Meter.CreateHistogram(
        "shardkit.fanout.width", unit: "{shard}", description: "Shards targeted by one multi-shard command.",
        tags: null, advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128, 256] });

    public static readonly Counter<long> RowsMerged = Meter.CreateCounter<long>(
        "shardkit.merge.rows", unit: "{row}", description: "Rows returned by multi-shard merges.");

    public static readonly Counter<long> Failures = Meter.CreateCounter<long>(
        "shardkit.shard.failures", unit: "{failure}", description: "Commands that failed on a shard.");

    public static readonly Counter<long> Retries = Meter.CreateCounter<long>(
        "shardkit.shard.retries", unit: "{retry}", description: "Retries of transient failures on a shard.");

    public static readonly Counter<long> DistributedOutcomes = Meter.CreateCounter<long>(
        "shardkit.distributed_transaction.outcomes", unit: "{transaction}", description: "Distributed transactions by outcome.");

    public static readonly Counter<long> BulkRows = Meter.CreateCounter<long>(
        "shardkit.bulk.rows", unit: "{row}", description: "Rows committed by bulk loads, per shard.");

    // Each data source with standbys adds its own callback; the one gauge reports them all.
    private static readonly ConcurrentDictionary<object, Func<IEnumerable<Measurement<long>>>> LagSources = new();

    public static readonly ObservableGauge<long> StandbyLag = Meter.CreateObservableGauge(
        "shardkit.standby.lag", () => LagSources.Values.SelectMany(source => source()), unit: "By",
        description: "How many bytes of WAL each standby is behind its shard's primary, at the last background check.");

    public const string PostgreSql = "postgresql";
    public const string SystemName = "db.system.name";
    public const string NamespaceTag = "db.namespace";
    public const string ServerAddressTag = "server.address";
    public const string ServerPortTag = "server.port";
    public const string OperationName = "db.operation.name";
    public const string CollectionTag = "db.collection.name";
    public const string StatusCodeTag = "db.response.status_code";
    public const string ErrorTypeTag = "error.type";
    public const string ShardTag = "shardkit.shard";
    public const string ShardKitOperationTag = "shardkit.operation";
    public const string ShardCountTag = "shardkit.shard_count";
    public const string MergeTag = "shardkit.merge";
    public const string RowsTag = "shardkit.rows";
    public const string OutcomeTag = "shardkit.outcome";
    public const string ServerTag = "shardkit.server";
    public const string StandbyTag = "shardkit.standby";

    /// <summary>
    /// True inside one of ShardKit's client spans: Npgsql's own command span would be a second client span for the
    /// same call, so each shard's data source filters it out (see ShardedDataSource).
    /// </summary>
    public static bool InCommandSpan => Activity.Current is { Kind: ActivityKind.Client } current && ReferenceEquals(current.Source, Source);

    /// <summary>
    /// The statement's summary when anything listens; otherwise <see cref="CommandSummary.None"/> without even a cache
    /// lookup, so a command nobody observes pays two flag checks.
    /// </summary>
    public static CommandSummary Summarize(string? sql) =>
        Source.HasListeners() || OperationDuration.Enabled || FanOutWidth.Enabled || Failures.Enabled ? CommandSummary.Of(sql) : CommandSummary.None;

    /// <summary>Reports a data source's standby lag on <see cref="StandbyLag"/> until the returned handle is disposed.</summary>
    public static IDisposable ObserveStandbyLag(Func<IEnumerable<Measurement<long>>> source)
    {
        var key = new object();
        LagSources[key] = source;
        return new LagRegistration(key);
    }

    private sealed class LagRegistration(object key) : IDisposable
    {
        public void Dispose() => LagSources.TryRemove(key, out _);
    }

    /// <summary>
    /// Starts the client activity of one command on one shard, named and tagged as OpenTelemetry's database
    /// conventions say, or returns null when nobody listens. <paramref name="operation"/> is ShardKit's method (Query, …).
    /// </summary>
    /// <remarks>
    /// The span names the server the command runs on: <c>shardkit.server</c> is <c>primary</c> with the shard's endpoint,
    /// or <c>standby</c> with the standby's endpoint and its name in <c>shardkit.standby</c>.
    /// </remarks>
    public static Activity? StartCommand(string operation, ShardInfo shard, CommandSummary command, StandbyInfo? standby = null)
    {
        if (!Source.HasListeners())
        {
            return null; // the hot path: no tag is built
        }

        var activity = Source.StartActivity(command.SpanName, ActivityKind.Client);
        if (activity is { IsAllDataRequested: true })
        {
            var endpoint = standby?.Endpoint ?? shard.Endpoint;
            activity.SetTag(SystemName, PostgreSql);
            activity.SetTag(NamespaceTag, endpoint.Database);
            activity.SetTag(ServerAddressTag, endpoint.Address);
            activity.SetTag(ServerPortTag, endpoint.Port);
            activity.SetTag(OperationName, command.Operation);
            activity.SetTag(CollectionTag, command.Collection);
            activity.SetTag(ShardTag, shard.Name);
            activity.SetTag(ShardKitOperationTag, operation);
            activity.SetTag(ServerTag, standby is null ? "primary" : "standby");
            if (standby is not null)
            {
                activity.SetTag(StandbyTag, standby.Name);
            }
        }

        return activity;
    }

    /// <summary>Starts the parent activity of a fan-out, or returns null when nobody listens.</summary>
    public static Activity? StartFanOut(string operation, int shardCount, string merge)
    {
        var activity = Start("ShardKit fan-out " + operation, operation);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(ShardCountTag, shardCount);
            activity.SetTag(MergeTag, merge);
        }

        return activity;
    }

    /// <summary>Starts the parent activity of a bulk load, or returns null when nobody listens.</summary>
    public static Activity? StartBulkInsert(string table, int shardCount)
    {
        var activity = Start("ShardKit bulk insert", BulkInsertOperation);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(CollectionTag, table);
            activity.SetTag(ShardCountTag, shardCount);
        }

        return activity;
    }

    /// <summary>Starts the activity of a distributed commit, rollback or recovery run, or returns null when nobody listens.</summary>
    public static Activity? StartDistributed(string operation, int shardCount)
    {
        var activity = Start("ShardKit distributed " + operation, operation);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(ShardCountTag, shardCount);
        }

        return activity;
    }

    /// <summary>
    /// Starts an internal activity around ShardKit's own work (a fan-out, a load, a commit). It carries no
    /// db.system.name: the database calls are its client children, and a backend must not count them twice.
    /// </summary>
    private static Activity? Start(string name, string operation)
    {
        var activity = Source.StartActivity(name, ActivityKind.Internal);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(ShardKitOperationTag, operation);
        }

        return activity;
    }

    /// <summary>Records one command's duration on one shard, with the error's type when it failed.</summary>
    public static void RecordDuration(string shard, CommandSummary command, long started, Exception? error = null)
    {
        if (!OperationDuration.Enabled)
        {
            return;
        }

        var tags = new TagList { { ShardTag, shard } };
        if (command.Operation is not null)
        {
            tags.Add(OperationName, command.Operation);
        }

        if (command.Collection is not null)
        {
            tags.Add(CollectionTag, command.Collection);
        }

        if (error is not null)
        {
            tags.Add(ErrorTypeTag, ErrorType(error));
        }

        OperationDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, tags);
    }

    /// <summary>Records how many shards one multi-shard command targets, by ShardKit method and SQL operation.</summary>
    public static void RecordFanOutWidth(int shards, string operation, CommandSummary command)
    {
        if (FanOutWidth.Enabled)
        {
            var tags = new TagList { { ShardKitOperationTag, operation } };
            if (command.Operation is not null)
            {
                tags.Add(OperationName, command.Operation);
            }

            FanOutWidth.Record(shards, tags);
        }
    }

    /// <summary>Counts the rows one multi-shard merge returned, by merge kind and ShardKit method.</summary>
    public static void RecordRowsMerged(long rows, string merge, string operation)
    {
        if (RowsMerged.Enabled)
        {
            RowsMerged.Add(rows, new KeyValuePair<string, object?>(MergeTag, merge), new KeyValuePair<string, object?>(ShardKitOperationTag, operation));
        }
    }

    /// <summary>Counts one failed command on a shard, by error type.</summary>
    public static void RecordFailure(string shard, Exception error) =>
        Failures.Add(1, new KeyValuePair<string, object?>(ShardTag, shard), new KeyValuePair<string, object?>(ErrorTypeTag, ErrorType(error)));

    /// <summary>Counts one distributed transaction's outcome (committed, rolled_back, in_doubt) and tags its activity.</summary>
    public static void RecordOutcome(Activity? activity, string outcome)
    {
        DistributedOutcomes.Add(1, new KeyValuePair<string, object?>(OutcomeTag, outcome));
        activity?.SetTag(OutcomeTag, outcome);
    }

    /// <summary>
    /// Marks an activity failed: error.type is the server's SQLSTATE when it answered with one (also in
    /// db.response.status_code), else the exception's type name. Never the message: it may carry values.
    /// </summary>
    public static void RecordError(Activity? activity, Exception error)
    {
        if (activity is not null)
        {
            activity.SetStatus(ActivityStatusCode.Error);
            activity.SetTag(ErrorTypeTag, ErrorType(error));
            if (error is PostgresException server)
            {
                activity.SetTag(StatusCodeTag, server.SqlState);
            }
        }
    }

    private static string ErrorType(Exception error) => error is PostgresException server ? server.SqlState : error.GetType().FullName!;
}

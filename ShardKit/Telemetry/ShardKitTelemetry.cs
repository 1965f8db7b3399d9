using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Reflection;

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

    public static readonly ActivitySource Source = new(ShardKitInfo.Name, Version);

    public static readonly Meter Meter = new(ShardKitInfo.Name, Version);

    public static readonly Histogram<double> OperationDuration = Meter.CreateHistogram<double>(
        "shardkit.operation.duration", unit: "s", description: "Duration of one command on one shard.");

    public static readonly Histogram<int> FanOutWidth = Meter.CreateHistogram<int>(
        "shardkit.fanout.width", unit: "{shard}", description: "Shards targeted by one multi-shard command.");

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

    public const string SystemName = "db.system.name";
    public const string OperationName = "db.operation.name";
    public const string ShardTag = "shardkit.shard";
    public const string ShardCountTag = "shardkit.shard_count";
    public const string MergeTag = "shardkit.merge";
    public const string RowsTag = "shardkit.rows";
    public const string OutcomeTag = "shardkit.outcome";
    public const string ErrorTypeTag = "error.type";
    public const string CollectionTag = "db.collection.name";

    /// <summary>Starts a client activity for a command, or returns null when nobody listens.</summary>
    public static Activity? StartCommand(string operation, string shard)
    {
        if (!Source.HasListeners())
        {
            return null; // the hot path: not even the activity's name is built
        }

        var activity = Start("ShardKit " + operation, operation, ActivityKind.Client);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(ShardTag, shard);
        }

        return activity;
    }

    /// <summary>Starts the parent activity of a fan-out, or returns null when nobody listens.</summary>
    public static Activity? StartFanOut(string operation, int shardCount, string merge)
    {
        var activity = Start("ShardKit fan-out " + operation, operation, ActivityKind.Internal);
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
        var activity = Start("ShardKit bulk insert", BulkLoad.Operation, ActivityKind.Internal);
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
        var activity = Start("ShardKit distributed " + operation, operation, ActivityKind.Internal);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(ShardCountTag, shardCount);
        }

        return activity;
    }

    /// <summary>Starts an activity with the database tags every ShardKit activity carries.</summary>
    private static Activity? Start(string name, string operation, ActivityKind kind)
    {
        var activity = Source.StartActivity(name, kind);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(SystemName, "postgresql");
            activity.SetTag(OperationName, operation);
        }

        return activity;
    }

    /// <summary>Counts one distributed transaction's outcome (committed, rolled_back, in_doubt) and tags its activity.</summary>
    public static void RecordOutcome(Activity? activity, string outcome)
    {
        DistributedOutcomes.Add(1, new KeyValuePair<string, object?>(OutcomeTag, outcome));
        activity?.SetTag(OutcomeTag, outcome);
    }

    /// <summary>Marks an activity failed with the error's type name only (messages may carry values).</summary>
    public static void RecordError(Activity? activity, Exception error)
    {
        if (activity is not null)
        {
            activity.SetStatus(ActivityStatusCode.Error);
            activity.SetTag(ErrorTypeTag, error.GetType().FullName);
        }
    }
}

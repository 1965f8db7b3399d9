using Microsoft.Extensions.Logging;

namespace ShardKit;

/// <summary>ShardKit's log messages, source-generated; every event id lives here. Never a parameter value or password.</summary>
internal static partial class ShardKitLog
{
    [LoggerMessage(EventId = 1001, Level = LogLevel.Warning, Message = "Command {Operation} failed on shard {Shard}: {ErrorType}")]
    public static partial void CommandFailed(ILogger logger, string operation, string shard, string errorType, Exception error);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Information, Message = "Retrying {Operation} on shard {Shard} after a transient failure (retry {Retry} of {MaxRetries}, in {DelayMs} ms)")]
    public static partial void Retrying(ILogger logger, string operation, string shard, int retry, int maxRetries, long delayMs);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Warning, Message = "Shard {Shard} is unavailable after {Failures} consecutive connection failures; failing fast for {BreakSeconds} s")]
    public static partial void CircuitOpened(ILogger logger, string shard, int failures, double breakSeconds);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Information, Message = "Shard {Shard} answered its probe; commands flow again")]
    public static partial void CircuitClosed(ILogger logger, string shard);

    [LoggerMessage(EventId = 1201, Level = LogLevel.Warning, Message = "Fan-out {Operation} failed on shard {Shard} ({Policy}): {ErrorType}")]
    public static partial void FanOutShardFailed(ILogger logger, string operation, string shard, FanOutPolicy policy, string errorType);

    [LoggerMessage(EventId = 1401, Level = LogLevel.Warning, Message = "Bulk insert into {Table} failed before commit ({ErrorType}); every shard rolled back")]
    public static partial void BulkInsertFailed(ILogger logger, string table, string errorType);

    [LoggerMessage(EventId = 1402, Level = LogLevel.Error, Message = "Bulk insert into {Table}: every COPY succeeded but the commit failed on {FailedShards}; committed on {CommittedShards}")]
    public static partial void BulkInsertCommitIncomplete(ILogger logger, string table, string failedShards, string committedShards);

    [LoggerMessage(EventId = 1403, Level = LogLevel.Debug, Message = "Bulk insert into {Table} wrote {Rows} rows across {ShardCount} shards")]
    public static partial void BulkInsertCompleted(ILogger logger, string table, long rows, int shardCount);

    [LoggerMessage(EventId = 1501, Level = LogLevel.Information, Message = "Id generator leased worker {Worker} from {Table} for {Holder}")]
    public static partial void IdWorkerLeased(ILogger logger, int worker, string table, string holder);

    [LoggerMessage(EventId = 1502, Level = LogLevel.Warning, Message = "Id generator could not renew the lease of worker {Worker} in {Table}; it ends at {LeaseEnd:O}")]
    public static partial void IdLeaseRenewalFailed(ILogger logger, int worker, string table, DateTimeOffset leaseEnd, Exception error);

    [LoggerMessage(EventId = 1503, Level = LogLevel.Error, Message = "Id generator lost worker {Worker} in {Table} to another process; it makes no ids past its old lease")]
    public static partial void IdLeaseLost(ILogger logger, int worker, string table);

    [LoggerMessage(EventId = 1504, Level = LogLevel.Warning, Message = "Id generator could not release worker {Worker} in {Table}; the lease will run out by itself")]
    public static partial void IdLeaseReleaseFailed(ILogger logger, int worker, string table, Exception error);
}

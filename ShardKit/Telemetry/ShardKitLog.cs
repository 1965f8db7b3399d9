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

    [LoggerMessage(EventId = 1301, Level = LogLevel.Debug, Message = "Distributed transaction {GlobalId} committed on {ShardCount} shards")]
    public static partial void DistributedCommitted(ILogger logger, string globalId, int shardCount);

    [LoggerMessage(EventId = 1302, Level = LogLevel.Warning, Message = "Distributed transaction {GlobalId} is committed but COMMIT PREPARED did not complete on {PendingShards}; recovery will apply it there")]
    public static partial void DistributedCommitPending(ILogger logger, string globalId, string pendingShards);

    [LoggerMessage(EventId = 1303, Level = LogLevel.Warning, Message = "Distributed transaction {GlobalId} failed to prepare on {FailedShards}; rolled back everywhere")]
    public static partial void DistributedPrepareFailed(ILogger logger, string globalId, string failedShards);

    [LoggerMessage(EventId = 1304, Level = LogLevel.Error, Message = "Distributed transaction {GlobalId} is in doubt: its decision could not be recorded on coordinator {Coordinator}; recovery will finish it")]
    public static partial void DistributedInDoubt(ILogger logger, string globalId, string coordinator, Exception error);

    [LoggerMessage(EventId = 1305, Level = LogLevel.Warning, Message = "Could not finish prepared transaction {GlobalId} on shard {Shard} ({ErrorType}); recovery will")]
    public static partial void PreparedLeftForRecovery(ILogger logger, string globalId, string shard, string errorType);

    [LoggerMessage(EventId = 1306, Level = LogLevel.Warning, Message = "Distributed transaction {GlobalId} was rolled back by recovery before its commit decision was written")]
    public static partial void DistributedAbortedByRecovery(ILogger logger, string globalId);

    [LoggerMessage(EventId = 1310, Level = LogLevel.Information, Message = "Recovery committed {GlobalId} on {Shards}")]
    public static partial void RecoveryCommitted(ILogger logger, string globalId, string shards);

    [LoggerMessage(EventId = 1311, Level = LogLevel.Information, Message = "Recovery rolled back {GlobalId} on {Shards} (no commit decision)")]
    public static partial void RecoveryRolledBack(ILogger logger, string globalId, string shards);

    [LoggerMessage(EventId = 1312, Level = LogLevel.Warning, Message = "Recovery could not reach shard {Shard}: {ErrorType}")]
    public static partial void RecoveryShardFailed(ILogger logger, string shard, string errorType, Exception error);

    [LoggerMessage(EventId = 1313, Level = LogLevel.Information, Message = "Recovery run: {Committed} committed, {RolledBack} rolled back, {Skipped} skipped, {Cleaned} decisions cleaned")]
    public static partial void RecoveryRun(ILogger logger, int committed, int rolledBack, int skipped, int cleaned);

    [LoggerMessage(EventId = 1314, Level = LogLevel.Error, Message = "The background recovery run failed; it runs again at the next interval")]
    public static partial void RecoveryServiceFailed(ILogger logger, Exception error);

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

    [LoggerMessage(EventId = 1601, Level = LogLevel.Warning, Message = "Shard {Shard}: its primary is gone and standby {Standby} was promoted; writes go there from now on")]
    public static partial void StandbyPromoted(ILogger logger, string shard, string standby);

    [LoggerMessage(EventId = 1701, Level = LogLevel.Information, Message = "Shard map epoch {Epoch} loaded from the catalog on shard {Shard}")]
    public static partial void MapLoaded(ILogger logger, long epoch, string shard);

    [LoggerMessage(EventId = 1702, Level = LogLevel.Warning, Message = "Could not read the stored shard map from shard {Shard} ({ErrorType}); routing stays on epoch {Epoch}")]
    public static partial void MapUnreadable(ILogger logger, string shard, string errorType, long epoch, Exception error);

    [LoggerMessage(EventId = 1703, Level = LogLevel.Error, Message = "The stored shard map on shard {Shard} cannot be used: {Problem}; routing stays on epoch {Epoch}")]
    public static partial void MapUnusable(ILogger logger, string shard, string problem, long epoch);

    [LoggerMessage(EventId = 1704, Level = LogLevel.Information, Message = "Bucket move {MoveId}: {State} ({Detail})")]
    public static partial void MoveStep(ILogger logger, string moveId, string state, string detail);

    [LoggerMessage(EventId = 1705, Level = LogLevel.Warning, Message = "The fence on shard {Shard} has no shardkit.check_owned (seeded and moved by an older ShardKit): reads of moving buckets there run unchecked for {Minutes} min; run SeedAsync, or a move with this version, to install it")]
    public static partial void ReadCheckMissing(ILogger logger, string shard, double minutes);

    [LoggerMessage(EventId = 1706, Level = LogLevel.Information, Message = "Shard {Shard} carries a bucket fence and this data source has no stored map: its writes name their buckets, and a write to a bucket moved away fails with ShardBucketMovedException; UseStoredMap follows moves instead")]
    public static partial void FenceWithoutStoredMap(ILogger logger, string shard);

    [LoggerMessage(EventId = 1708, Level = LogLevel.Warning, Message = "Move {MoveId}: could not create the two-phase decision log on shard {Shard} ({ErrorType}); if an app's distributed transaction creates it there while a move's slot is made, that move can stop (cancel and start it again then); create the log ahead or grant CREATE")]
    public static partial void DecisionLogNotCreated(ILogger logger, string moveId, string shard, string errorType);

    [LoggerMessage(EventId = 1707, Level = LogLevel.Warning, Message = "Shard {Shard} carries a bucket fence of {FenceBuckets} buckets, and this data source's map has {MapBuckets}: its writes do not name their buckets there (the rows' own checks still run); configure the stored map's bucket count, or UseStoredMap")]
    public static partial void FenceOfOtherBucketCount(ILogger logger, string shard, int fenceBuckets, int mapBuckets);

    [LoggerMessage(EventId = 1708, Level = LogLevel.Debug, Message = "Shard {Shard} did not answer whether it carries a bucket fence ({Error}); the next write asks again in a few seconds")]
    public static partial void FenceQuestionFailed(ILogger logger, string shard, string error);
}

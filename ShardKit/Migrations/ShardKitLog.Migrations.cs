using Microsoft.Extensions.Logging;

namespace ShardKit;

/// <summary>Schema migration events (17xx), kept beside the migrations; the other ids are in ShardKitLog.cs.</summary>
internal static partial class ShardKitLog
{
    [LoggerMessage(EventId = 1701, Level = LogLevel.Information, Message = "Migration {Script} applied on shard {Shard} in {DurationMs} ms")]
    public static partial void MigrationApplied(ILogger logger, string script, string shard, long durationMs);

    [LoggerMessage(EventId = 1702, Level = LogLevel.Error, Message = "Migration {Script} failed on shard {Shard} (SQLSTATE {SqlState})")]
    public static partial void MigrationFailed(ILogger logger, string script, string shard, string? sqlState, Exception error);

    [LoggerMessage(EventId = 1703, Level = LogLevel.Warning, Message = "Dropped invalid index {Index} left by an interrupted run of {Script} on shard {Shard}")]
    public static partial void InvalidIndexDropped(ILogger logger, string index, string script, string shard);
}

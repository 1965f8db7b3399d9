namespace ShardKit;

/// <summary>
/// What the pipeline needs to know about one command on one shard: its name in telemetry and logs, its statement's
/// summary, whether it writes (a write is tried again only when the retry options allow writes), and, in a fan-out, the
/// slots that bound how many shards run at once and the per-shard timeout. A command run <c>Once</c> is never tried again
/// (its work is not safe to repeat, whatever the options say). A command that <c>CarriesSetup</c> sends the statement a
/// transaction asks to run first on the shard (a distributed transaction's lock bound) in its own round trip, so the
/// session does not send it on its own (see <see cref="IShardEnlistment.PendingSetup"/>).
/// </summary>
internal readonly record struct ShardCommand(string Operation, CommandSummary Summary, bool IsWrite,
    SemaphoreSlim? Slots = null, TimeSpan? Timeout = null, bool Once = false, bool CarriesSetup = false)
{
    public static ShardCommand For(string operation, string? sql, bool isWrite) =>
        new(operation, ShardKitTelemetry.Summarize(sql), isWrite);
}

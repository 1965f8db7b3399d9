namespace ShardKit;

/// <summary>
/// What the last background check found on one standby: whether it answered, whether it is still in recovery (a
/// promoted standby is not), how far it has replayed, and how far behind its primary that is.
/// </summary>
internal sealed record StandbyStatus(bool Reachable, bool InRecovery, ulong ReplayPosition, long? LagBytes, TimeSpan? LagTime,
    string? Error = null)
{
    /// <summary>Before the first check: not used for reads.</summary>
    public static StandbyStatus Unknown { get; } = new(false, true, 0, null, null, "not checked yet");
}

namespace ShardKit;

/// <summary>
/// How reads use the shards' standbys: the default policy, how far behind a standby may be, how often ShardKit checks
/// (in the background, never on a command's path), and whether a connection reads its own writes.
/// </summary>
public sealed record ReplicaOptions
{
    /// <summary>Reads on the primary; a standby may lag 30 s; checked every second; read-your-writes on.</summary>
    public static ReplicaOptions Default { get; } = new();

    /// <summary>The data source's read policy; a connection (<see cref="ShardedConnection.ReadPolicy"/>) or a call may choose another.</summary>
    public ReadPolicy ReadPolicy { get; init; } = ReadPolicy.Primary;

    /// <summary>
    /// How long a standby may be behind (now minus the time of the last transaction it replayed, counted only while it
    /// has not replayed everything the primary wrote); null for no time limit. 30 seconds by default.
    /// </summary>
    public TimeSpan? MaxStandbyLag { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How many bytes of WAL a standby may be behind its primary; null (the default) for no byte limit.</summary>
    public long? MaxStandbyLagBytes { get; init; }

    /// <summary>How often each standby's replay position and each primary's WAL position are read; one second by default.</summary>
    public TimeSpan RefreshInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// After a write or commit on a shard with standbys, a connection remembers the primary's WAL position (one extra
    /// <c>select</c> on the same connection) and reads that shard only from a standby known to have replayed it, else from
    /// the primary. On by default.
    /// </summary>
    public bool ReadYourWrites { get; init; } = true;

    internal IEnumerable<string> Validate()
    {
        if (!Enum.IsDefined(ReadPolicy))
        {
            yield return $"Replicas:ReadPolicy '{ReadPolicy}' is unknown; use Primary, PreferStandby or Standby.";
        }

        if (MaxStandbyLag is { } lag && lag <= TimeSpan.Zero)
        {
            yield return $"Replicas:MaxStandbyLag is {lag}; use a positive time span, or null for no time limit.";
        }

        if (MaxStandbyLagBytes is < 0)
        {
            yield return $"Replicas:MaxStandbyLagBytes is {MaxStandbyLagBytes}; use 0 or more bytes, or null for no byte limit.";
        }

        if (RefreshInterval <= TimeSpan.Zero)
        {
            yield return $"Replicas:RefreshInterval is {RefreshInterval}; use a positive time span (one second is a good default).";
        }
    }
}

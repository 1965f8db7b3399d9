namespace ShardKit;

/// <summary>
/// A read under <see cref="ReadPolicy.Standby"/> found no standby of its shard that qualifies (none configured, none
/// reachable, all too far behind, or none has replayed the connection's last write yet). The message says why for each.
/// </summary>
public sealed class StandbyUnavailableException : ShardKitException
{
    /// <summary>Creates an exception naming the shard and why each of its standbys was skipped.</summary>
    public StandbyUnavailableException(string shard, IReadOnlyList<string> reasons)
        : base($"No standby of shard '{shard}' can serve this read under ReadPolicy.Standby: " +
               (reasons.Count == 0 ? "the shard has no standbys configured" : string.Join("; ", reasons)) +
               ". Use ReadPolicy.PreferStandby to fall back to the primary, raise Replicas:MaxStandbyLag, or check the standbys (CheckHealthAsync).")
    {
        Shard = shard;
    }

    /// <summary>Creates an exception with a message.</summary>
    public StandbyUnavailableException(string message)
        : base(message) => Shard = "";

    /// <summary>Creates an exception with a message and a cause.</summary>
    public StandbyUnavailableException(string message, Exception? innerException)
        : base(message, innerException) => Shard = "";

    /// <summary>Creates an exception with no message.</summary>
    public StandbyUnavailableException() => Shard = "";

    /// <summary>The shard whose standbys could not serve the read.</summary>
    public string Shard { get; }
}

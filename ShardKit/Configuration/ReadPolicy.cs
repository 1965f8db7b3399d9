namespace ShardKit;

/// <summary>
/// Where a read goes when its shard has standbys. Writes, transactions and distributed transactions always go to the
/// primary, whatever the policy.
/// </summary>
public enum ReadPolicy
{
    /// <summary>Every read goes to the primary (the default, and the only choice for a shard without standbys).</summary>
    Primary,

    /// <summary>A standby that qualifies (reachable, within the lag limits, caught up with this connection's writes), else the primary.</summary>
    PreferStandby,

    /// <summary>Only a standby that qualifies; when none does, the read fails with <see cref="StandbyUnavailableException"/>.</summary>
    Standby,
}

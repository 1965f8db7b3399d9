namespace ShardKit.Tool;

/// <summary>What the <c>shardkit</c> command returns to the shell; scripts and CI test these.</summary>
public static class ExitCodes
{
    /// <summary>Done: every shard migrated, or (status) every shard up to date.</summary>
    public const int Ok = 0;

    /// <summary>A migration failed, a shard could not be reached or read, or another process held the migration lock.</summary>
    public const int Failed = 1;

    /// <summary>The command line or the configuration is wrong (an unknown option, a missing scripts folder, a bad connection string).</summary>
    public const int Usage = 2;

    /// <summary>Status only: shards differ in what they applied, or a script changed after it ran.</summary>
    public const int Drift = 3;

    /// <summary>Status only: every shard agrees, but scripts are pending.</summary>
    public const int Pending = 4;
}

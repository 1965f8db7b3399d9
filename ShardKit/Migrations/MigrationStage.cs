namespace ShardKit;

/// <summary>Where a script is on one shard, as reported by <see cref="MigrationProgress"/>.</summary>
public enum MigrationStage
{
    /// <summary>The script started on the shard.</summary>
    Started,

    /// <summary>The script ran and its history row is written.</summary>
    Applied,

    /// <summary>The script failed on the shard; nothing more runs there in this call.</summary>
    Failed,
}

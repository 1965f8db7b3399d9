namespace ShardKit;

/// <summary>How <see cref="ShardMigrator"/> applies migrations and where it records them.</summary>
public sealed class MigrationOptions
{
    /// <summary>The shard migrated first, alone; the others start only after it succeeded. Null (the default): the first shard.</summary>
    public string? CanaryShard { get; init; }

    /// <summary>
    /// True (the default): the canary shard (<see cref="CanaryShard"/>) runs every pending script before any other shard
    /// starts, so a script that fails there never reaches another shard. False: every shard starts at once (bounded by
    /// <see cref="MaxParallelism"/>), which takes about half as long; for scripts already proven on a copy.
    /// </summary>
    public bool CanaryFirst { get; init; } = true;

    /// <summary>
    /// How many shards after the canary are migrated at once; 4 by default. At least the number of shards lets the run
    /// after the canary take about as long as one shard.
    /// </summary>
    public int MaxParallelism { get; init; } = 4;

    /// <summary>The schema of the history table; <c>public</c> by default. Created when missing.</summary>
    public string HistorySchema { get; init; } = "public";

    /// <summary>The history table; <c>shardkit_migrations</c> by default. Created on each shard at its first migration.</summary>
    public string HistoryTable { get; init; } = "shardkit_migrations";

    /// <summary>
    /// How long to wait for another process's migration to release a shard's lock before failing with
    /// <see cref="MigrationLockTimeoutException"/>; 30 seconds by default, zero to fail at once.
    /// </summary>
    public TimeSpan LockTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The time bound of each statement; zero (the default) for none, since index builds may take hours.</summary>
    public TimeSpan CommandTimeout { get; init; }

    /// <summary>
    /// False (the default): a script whose checksum changed after it ran on some shard stops the run before anything is
    /// applied. True: the change is ignored (the history keeps the old checksum).
    /// </summary>
    public bool AllowChecksumDrift { get; init; }

    internal void Validate()
    {
        var errors = new List<string>();
        if (MaxParallelism < 1)
        {
            errors.Add($"MaxParallelism is {MaxParallelism}; it must be at least 1.");
        }

        if (LockTimeout < TimeSpan.Zero || CommandTimeout < TimeSpan.Zero)
        {
            errors.Add("LockTimeout and CommandTimeout must not be negative.");
        }

        if (string.IsNullOrWhiteSpace(HistorySchema) || string.IsNullOrWhiteSpace(HistoryTable))
        {
            errors.Add("HistorySchema and HistoryTable must be names (they are quoted as written).");
        }

        if (errors.Count > 0)
        {
            throw new MigrationException("Invalid MigrationOptions: " + string.Join(" ", errors));
        }
    }
}

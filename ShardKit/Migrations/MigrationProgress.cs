namespace ShardKit;

/// <summary>One step of a migration run on one shard, reported through <see cref="IProgress{T}"/>.</summary>
public sealed class MigrationProgress
{
    internal MigrationProgress(string shard, Migration migration, MigrationStage stage, TimeSpan elapsed, bool isCanary)
    {
        Shard = shard;
        Version = migration.Version;
        Script = migration.ToString();
        Stage = stage;
        Elapsed = elapsed;
        IsCanary = isCanary;
    }

    /// <summary>The shard.</summary>
    public string Shard { get; }

    /// <summary>The script's version.</summary>
    public long Version { get; }

    /// <summary>The script, as <c>0001_create_orders</c>.</summary>
    public string Script { get; }

    /// <summary>Started, applied or failed.</summary>
    public MigrationStage Stage { get; }

    /// <summary>How long the script has run on this shard (zero when it starts).</summary>
    public TimeSpan Elapsed { get; }

    /// <summary>True on the canary shard, which runs before all others.</summary>
    public bool IsCanary { get; }

    /// <inheritdoc />
    public override string ToString() => $"{Shard}: {Script} {Stage.ToString().ToLowerInvariant()} ({Elapsed.TotalMilliseconds:0} ms)";
}

namespace ShardKit;

/// <summary>What <see cref="ShardMigrator.MigrateAsync"/> applied.</summary>
public sealed class MigrationResult
{
    internal MigrationResult(string? canaryShard, IReadOnlyDictionary<string, IReadOnlyList<long>> applied)
    {
        CanaryShard = canaryShard;
        AppliedVersions = applied;
    }

    /// <summary>The shard migrated first; null when <see cref="MigrationOptions.CanaryFirst"/> was off.</summary>
    public string? CanaryShard { get; }

    /// <summary>Per shard, the versions this call applied there, in order; empty for a shard that was up to date.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<long>> AppliedVersions { get; }

    /// <summary>How many scripts ran, counted once per shard; zero when every shard was up to date.</summary>
    public int AppliedCount => AppliedVersions.Values.Sum(v => v.Count);
}

namespace ShardKit;

/// <summary>The migration state of one shard, compared with the scripts the application knows.</summary>
public sealed class ShardMigrationStatus
{
    internal ShardMigrationStatus(string shard, IReadOnlyList<AppliedMigration> applied, IReadOnlyList<Migration> known)
    {
        Shard = shard;
        Applied = applied;
        var byVersion = applied.ToDictionary(a => a.Version);
        Pending = known.Where(m => !byVersion.ContainsKey(m.Version)).ToArray();
        ChecksumMismatches = known.Where(m => byVersion.TryGetValue(m.Version, out var a) && a.Checksum != m.Checksum).ToArray();
        Unknown = applied.Where(a => !known.Any(m => m.Version == a.Version)).ToArray();
    }

    internal ShardMigrationStatus(string shard, string error)
    {
        Shard = shard;
        Error = error;
        Applied = [];
        Pending = [];
        ChecksumMismatches = [];
        Unknown = [];
    }

    /// <summary>The shard.</summary>
    public string Shard { get; }

    /// <summary>The highest applied version; null when nothing ran on the shard (or it could not be read).</summary>
    public long? AppliedVersion => Applied.Count == 0 ? null : Applied[^1].Version;

    /// <summary>The history rows, in version order.</summary>
    public IReadOnlyList<AppliedMigration> Applied { get; }

    /// <summary>The known scripts not applied on this shard yet, in order.</summary>
    public IReadOnlyList<Migration> Pending { get; }

    /// <summary>Known scripts that ran here with different text: they were edited after they ran (checksum drift).</summary>
    public IReadOnlyList<Migration> ChecksumMismatches { get; }

    /// <summary>Versions applied here that the application does not know (a newer release migrated this shard).</summary>
    public IReadOnlyList<AppliedMigration> Unknown { get; }

    /// <summary>True when some other shard has a version applied that this one lacks.</summary>
    public bool IsBehind { get; internal set; }

    /// <summary>Why the shard's history could not be read (the connection string is never shown); null when it was.</summary>
    public string? Error { get; }
}

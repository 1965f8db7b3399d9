namespace ShardKit;

/// <summary>The migration state of every shard: what ran, what is pending, and where shards disagree.</summary>
public sealed class MigrationStatus
{
    internal MigrationStatus(IReadOnlyList<ShardMigrationStatus> shards)
    {
        Shards = shards;
        var readable = shards.Where(s => s.Error is null).ToArray();
        var everywhere = readable.SelectMany(s => s.Applied.Select(a => a.Version)).ToHashSet();
        foreach (var shard in readable)
        {
            shard.IsBehind = !everywhere.IsSubsetOf(shard.Applied.Select(a => a.Version));
        }

        ShardsBehind = readable.Where(s => s.IsBehind).Select(s => s.Shard).ToArray();
        UnreadableShards = shards.Where(s => s.Error is not null).Select(s => s.Shard).ToArray();
        LatestVersion = everywhere.Count == 0 ? null : everywhere.Max();
    }

    /// <summary>Each shard's state, in shard order.</summary>
    public IReadOnlyList<ShardMigrationStatus> Shards { get; }

    /// <summary>The highest version applied on any shard; null when none has any.</summary>
    public long? LatestVersion { get; }

    /// <summary>Shards lacking a version that another shard has (a run stopped partway: run the migration again).</summary>
    public IReadOnlyList<string> ShardsBehind { get; }

    /// <summary>Shards whose history could not be read.</summary>
    public IReadOnlyList<string> UnreadableShards { get; }

    /// <summary>True when shards differ in what they applied, or a script changed after it ran.</summary>
    public bool HasDrift => ShardsBehind.Count > 0 || Shards.Any(s => s.ChecksumMismatches.Count > 0);

    /// <summary>True when every shard was read, has no pending script and no drift.</summary>
    public bool IsUpToDate => UnreadableShards.Count == 0 && !HasDrift && Shards.All(s => s.Pending.Count == 0);
}

namespace ShardKit;

/// <summary>One row of a shard's migration history table.</summary>
public sealed class AppliedMigration
{
    internal AppliedMigration(long version, string name, string checksum, DateTimeOffset appliedAt, TimeSpan duration, bool isTransactional)
    {
        Version = version;
        Name = name;
        Checksum = checksum;
        AppliedAt = appliedAt;
        Duration = duration;
        IsTransactional = isTransactional;
    }

    /// <summary>The script's version.</summary>
    public long Version { get; }

    /// <summary>The script's name when it ran.</summary>
    public string Name { get; }

    /// <summary>The script's checksum when it ran.</summary>
    public string Checksum { get; }

    /// <summary>When it finished on the shard (the shard's clock).</summary>
    public DateTimeOffset AppliedAt { get; }

    /// <summary>How long it ran.</summary>
    public TimeSpan Duration { get; }

    /// <summary>Whether it ran in a transaction.</summary>
    public bool IsTransactional { get; }

    /// <inheritdoc />
    public override string ToString() => $"{Version:D4}_{Name}";
}

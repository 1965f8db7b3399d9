namespace ShardKit;

/// <summary>How a <see cref="ShardIdGenerator"/> leases its worker number and treats its clock.</summary>
public sealed class ShardIdGeneratorOptions
{
    /// <summary>
    /// The table on the first shard that hands out worker numbers (created when missing; may be schema-qualified).
    /// Every generator whose ids go into the same tables must use the same table.
    /// </summary>
    public string WorkerTable { get; set; } = "shardkit_id_workers";

    /// <summary>
    /// How long a lease lasts without renewal (default 60 s). A generator never issues an id stamped after its lease
    /// ends, so a crashed process's worker number is free for another process this long after its last renewal.
    /// </summary>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How often the lease is renewed in the background (default 20 s); less than <see cref="LeaseDuration"/>.</summary>
    public TimeSpan RenewInterval { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// How far ahead of the clock a bucket may borrow milliseconds once it has used the 16 ids of the current one
    /// (default 1 s). Bursts on one key go on at full speed until they are this far ahead, then wait for the clock.
    /// </summary>
    public TimeSpan MaxRunAhead { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// The furthest the clock may step back before <see cref="ShardIdGenerator.NextId(ShardKeyValue)"/> throws
    /// <see cref="ShardIdClockException"/> instead of waiting for it to catch up (default 5 s; more than
    /// <see cref="MaxRunAhead"/>).
    /// </summary>
    public TimeSpan MaxClockStepBack { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Describes this process in the worker table for operators; by default machine name and process id.</summary>
    public string? Holder { get; set; }

    internal void Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(WorkerTable) || !SqlNames.IsValid(WorkerTable))
        {
            errors.Add($"WorkerTable '{WorkerTable}' is not a plain table name; use letters, digits and _ (optionally schema.table).");
        }

        if (LeaseDuration < TimeSpan.FromSeconds(1))
        {
            errors.Add($"LeaseDuration is {LeaseDuration}; use at least 1 second (60 s is a good default).");
        }

        if (RenewInterval <= TimeSpan.Zero || RenewInterval >= LeaseDuration)
        {
            errors.Add($"RenewInterval is {RenewInterval}; use more than zero and less than LeaseDuration ({LeaseDuration}), e.g. a third of it.");
        }

        if (MaxRunAhead < TimeSpan.Zero)
        {
            errors.Add($"MaxRunAhead is {MaxRunAhead}; use zero or more (1 s is a good default).");
        }

        if (MaxClockStepBack <= MaxRunAhead)
        {
            errors.Add($"MaxClockStepBack is {MaxClockStepBack}; use more than MaxRunAhead ({MaxRunAhead}).");
        }

        if (errors.Count > 0)
        {
            throw new ShardConfigurationException(errors);
        }
    }
}

namespace ShardKit;

/// <summary>
/// A schema migration failed or could not start: a script failed on a shard (<see cref="Shard"/>, <see cref="Version"/>,
/// <see cref="Script"/>, and the server's <see cref="SqlState"/>; the server's error is the inner exception), a script
/// applied earlier was changed since (checksum drift), or the list of scripts is invalid. A failing script on the canary
/// shard stops the run before any other shard is touched. Fix the cause and run the migration again: applied scripts are
/// skipped and every shard converges.
/// </summary>
public class MigrationException : ShardKitException
{
    /// <summary>Creates an exception with no message.</summary>
    public MigrationException()
    {
    }

    /// <summary>Creates an exception with a message that says what to do.</summary>
    public MigrationException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public MigrationException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The shard where the migration failed; null when it failed before reaching a shard.</summary>
    public string? Shard { get; internal init; }

    /// <summary>The version of the script that failed; null when no script was running.</summary>
    public long? Version { get; internal init; }

    /// <summary>The script that failed, as <c>0001_create_orders</c>; null when no script was running.</summary>
    public string? Script { get; internal init; }

    /// <summary>The PostgreSQL error code (SQLSTATE, such as <c>42P01</c>) when the server refused a statement.</summary>
    public string? SqlState { get; internal init; }

    /// <summary>
    /// Every failed shard with its own <see cref="MigrationException"/>, when shards after the canary failed (each ran
    /// independently); empty otherwise.
    /// </summary>
    public IReadOnlyList<ShardFailure> Failures { get; internal init; } = [];

    /// <summary>The shards that finished every pending script before the run stopped.</summary>
    public IReadOnlyList<string> CompletedShards { get; internal init; } = [];
}

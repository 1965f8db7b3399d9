namespace ShardKit;

/// <summary>
/// Another process holds the migration lock of a shard (a session advisory lock ShardKit takes on every shard before it
/// migrates) for longer than <see cref="MigrationOptions.LockTimeout"/>: it is migrating now. Nothing was applied by
/// this call. Wait for the other run to finish and check <see cref="ShardMigrator.GetStatusAsync"/>, or run again.
/// </summary>
public sealed class MigrationLockTimeoutException : MigrationException
{
    /// <summary>Creates an exception with no message.</summary>
    public MigrationLockTimeoutException()
    {
    }

    /// <summary>Creates an exception with a message.</summary>
    public MigrationLockTimeoutException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and a cause.</summary>
    public MigrationLockTimeoutException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>How long this call waited for the lock.</summary>
    public TimeSpan LockTimeout { get; internal init; }

    /// <summary>The server process id that held the lock when the wait ended, when the shard reported it.</summary>
    public int? HolderProcessId { get; internal init; }
}

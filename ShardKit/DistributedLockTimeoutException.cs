using Npgsql;

namespace ShardKit;

/// <summary>
/// A statement inside a distributed transaction waited longer than <see cref="DistributedTransactionOptions.LockTimeout"/>
/// for a lock on one shard (PostgreSQL's <c>55P03</c>, inside <see cref="Exception.InnerException"/>). Usually two
/// distributed transactions locked rows on two shards in opposite order and waited for each other, a deadlock no single
/// server can see. The transaction can no longer commit: roll it back (or dispose it) and run the whole transaction
/// again; the other one proceeds once this one's locks are released.
/// </summary>
public sealed class DistributedLockTimeoutException : ShardKitException
{
    /// <summary>Creates an exception for the shard, the bound that was exceeded, and the server's error.</summary>
    public DistributedLockTimeoutException(string shard, TimeSpan lockTimeout, PostgresException? innerException)
        : base(Describe(shard, lockTimeout), innerException)
    {
        Shard = shard;
        LockTimeout = lockTimeout;
    }

    /// <summary>Creates an exception with no message.</summary>
    public DistributedLockTimeoutException() => Shard = "";

    /// <summary>Creates an exception with a message.</summary>
    public DistributedLockTimeoutException(string message)
        : base(message) => Shard = "";

    /// <summary>Creates an exception with a message and a cause.</summary>
    public DistributedLockTimeoutException(string message, Exception? innerException)
        : base(message, innerException) => Shard = "";

    /// <summary>The shard where the statement waited for a lock.</summary>
    public string Shard { get; }

    /// <summary>
    /// The lock wait bound in force (zero when it is off, so the wait ended by a <c>NOWAIT</c> or the session's own
    /// <c>lock_timeout</c>).
    /// </summary>
    public TimeSpan LockTimeout { get; }

    /// <summary>Always true: rolling the whole transaction back and running it again is expected to succeed.</summary>
    public bool IsRetryable => true;

    /// <summary>True when <paramref name="error"/> is PostgreSQL giving up on a lock (<c>lock_timeout</c> or <c>NOWAIT</c>).</summary>
    internal static bool Matches(PostgresException error) => error.SqlState == PostgresErrorCodes.LockNotAvailable;

    private static string Describe(string shard, TimeSpan lockTimeout) =>
        $"A statement of the distributed transaction could not get a lock on shard '{shard}'" +
        (lockTimeout > TimeSpan.Zero ? $" within the lock timeout ({lockTimeout.TotalMilliseconds:0.###} ms)" : "") +
        ", most likely because another distributed transaction holds it while waiting for a lock this one holds on another shard. " +
        "This transaction can no longer commit: roll it back (or dispose it) and retry the whole transaction. If transactions " +
        "often collide, lock rows across shards in one order (for example by shard key), or raise DistributedTransactionOptions.LockTimeout " +
        "if legitimate lock waits take longer.";
}

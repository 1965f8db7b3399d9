using Npgsql;

namespace ShardKit;

/// <summary>
/// A shard refused <c>PREPARE TRANSACTION</c> because of its <c>max_prepared_transactions</c> setting: it is 0 (two-phase
/// commit disabled, PostgreSQL's default) or every slot is taken. Set <c>max_prepared_transactions</c> on that server to
/// at least the number of distributed transactions that may commit at once, and restart it.
/// </summary>
public sealed class PreparedTransactionsUnavailableException : ShardKitException
{
    /// <summary>Creates an exception for the shard and the server's error.</summary>
    public PreparedTransactionsUnavailableException(string shard, PostgresException? innerException)
        : base(Describe(shard, innerException), innerException) => Shard = shard;

    /// <summary>Creates an exception with no message.</summary>
    public PreparedTransactionsUnavailableException() => Shard = "";

    /// <summary>Creates an exception with a message.</summary>
    public PreparedTransactionsUnavailableException(string message)
        : base(message) => Shard = "";

    /// <summary>Creates an exception with a message and a cause.</summary>
    public PreparedTransactionsUnavailableException(string message, Exception? innerException)
        : base(message, innerException) => Shard = "";

    /// <summary>The shard that refused to prepare.</summary>
    public string Shard { get; }

    /// <summary>True when <paramref name="error"/> is PostgreSQL refusing a prepare for lack of prepared-transaction slots.</summary>
    internal static bool Matches(PostgresException error) =>
        error.SqlState is PostgresErrorCodes.ObjectNotInPrerequisiteState or PostgresErrorCodes.OutOfMemory
        // The hint names the setting in every server language: "Set max_prepared_transactions to a nonzero value." or
        // "Increase max_prepared_transactions (currently 10)."
        && (error.Hint ?? "").Contains("max_prepared_transactions", StringComparison.Ordinal);

    private static string Describe(string shard, PostgresException? error) =>
        error?.SqlState == PostgresErrorCodes.OutOfMemory
            ? $"Shard '{shard}' has no free prepared-transaction slot: all max_prepared_transactions are in use. Raise " +
              "max_prepared_transactions on that server (it must be at least the number of distributed transactions committing at " +
              "once, restart required), and run ShardedDataSource.RecoverAsync in case old prepared transactions are left over."
            : $"Shard '{shard}' has two-phase commit disabled (max_prepared_transactions = 0, PostgreSQL's default), so a " +
              "distributed transaction cannot prepare there. Set max_prepared_transactions on that server to at least the number " +
              "of distributed transactions committing at once and restart it.";
}

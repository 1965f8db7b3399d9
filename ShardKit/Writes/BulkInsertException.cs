namespace ShardKit;

/// <summary>
/// A bulk load failed. When a row was at fault, <see cref="RowIndex"/> names it (its zero-based position in the input)
/// and <see cref="Property"/> the property, when one is known; when shards failed, <see cref="Failures"/> names each
/// one with its error (a row a shard's server refused is both). <see cref="CommittedShards"/> and <see cref="RolledBackShards"/> say what each shard kept:
/// a failure before the commit step leaves every shard rolled back, with none of the load's rows; only a failure during
/// the commit step itself can leave some shards committed.
/// </summary>
public sealed class BulkInsertException : ShardKitException
{
    /// <summary>Creates an exception with no message.</summary>
    public BulkInsertException()
    {
    }

    /// <summary>Creates an exception with a message that says what to do.</summary>
    public BulkInsertException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public BulkInsertException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    internal BulkInsertException(string message, Exception? innerException, BulkFault fault,
        IReadOnlyList<string> committed, IReadOnlyList<string> rolledBack, IReadOnlyList<string> inDoubt)
        : base(message, innerException)
    {
        RowIndex = fault.RowIndex;
        Property = fault.Property;
        Failures = fault.Failures;
        CommittedShards = committed;
        RolledBackShards = rolledBack;
        InDoubtShards = inDoubt;
    }

    /// <summary>
    /// The zero-based position in the input of the row at fault. Set when ShardKit refused the row before sending it
    /// (a null row, a null or unplaceable key, a value its column's type cannot take, the input failing while that row
    /// was read), and when a shard's server refused it during the COPY with a data error (SQLSTATE class 22: numeric
    /// overflow, value too long, …) or a constraint error (class 23: NOT NULL, CHECK, unique, foreign key) whose
    /// context names the COPY line (<c>COPY table, line N</c>, as PostgreSQL words it in English and most translations).
    /// Null when no row was at fault (a missing table or column, a shard unreachable or lost, cancellation), for a
    /// constraint the server checks only at commit (<c>DEFERRABLE INITIALLY DEFERRED</c>) or after the last row (a
    /// statement-level trigger), for an error of another class (such as one a trigger raises), and when the server's
    /// context is worded otherwise.
    /// </summary>
    public long? RowIndex { get; }

    /// <summary>
    /// The row type's property at fault, when one is known: the property whose value ShardKit refused, the key that is
    /// null or cannot be placed, a property whose column the table lacks (with no <see cref="RowIndex"/>), or the
    /// property of the column a shard's server named (a value its column cannot take, a NOT NULL violation). Null for a
    /// null row, a failing input, a CHECK, unique or foreign key violation (they name no single column), and whenever
    /// no row was at fault.
    /// </summary>
    public string? Property { get; }

    /// <summary>
    /// Each failed shard with its error, in shard order: empty when ShardKit refused the input before it reached a
    /// shard; a row a shard's server refused lists that shard with the server's <c>PostgresException</c>.
    /// </summary>
    public IReadOnlyList<ShardFailure> Failures { get; } = [];

    /// <summary>Shards that committed their part of the load and keep it (empty unless the commit step itself failed).</summary>
    public IReadOnlyList<string> CommittedShards { get; } = [];

    /// <summary>Shards that keep none of the load's rows.</summary>
    public IReadOnlyList<string> RolledBackShards { get; } = [];

    /// <summary>
    /// Shards whose commit was sent but never answered (the connection broke during the commit step): they may or
    /// may not keep their rows; check them before loading again.
    /// </summary>
    public IReadOnlyList<string> InDoubtShards { get; } = [];
}

namespace ShardKit;

/// <summary>
/// A bulk load failed. When the input was at fault, <see cref="RowIndex"/> and <see cref="Property"/> name the row
/// (its zero-based position in the input) and the property; when shards failed, <see cref="Failures"/> names each
/// one with its error. <see cref="CommittedShards"/> and <see cref="RolledBackShards"/> say what each shard kept:
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

    /// <summary>The zero-based position in the input of the row at fault, when one was.</summary>
    public long? RowIndex { get; }

    /// <summary>The row type's property at fault, when one was.</summary>
    public string? Property { get; }

    /// <summary>Each failed shard with its error, in shard order; empty when the input was at fault.</summary>
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

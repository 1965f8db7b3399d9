namespace ShardKit;

/// <summary>
/// Every shard prepared, but the commit decision could not be written to, or read back from, the coordinator shard:
/// the transaction may be committed or not. It is still atomic: <see cref="ShardedDataSource.RecoverAsync"/> commits
/// it everywhere if the decision was logged and rolls it back everywhere otherwise. Check the coordinator, run recovery,
/// then read the data to learn the outcome.
/// </summary>
public sealed class DistributedTransactionInDoubtException : ShardKitException
{
    /// <summary>Creates an exception for the global id, its shards and its coordinator.</summary>
    public DistributedTransactionInDoubtException(string globalId, IReadOnlyList<string> shards, string coordinator, Exception? innerException)
        : base($"Distributed transaction {globalId} is in doubt: all of its shards ({string.Join(", ", shards)}) prepared, but its " +
               $"decision could not be recorded on the coordinator shard '{coordinator}' ({innerException?.Message}). It is " +
               "atomic either way: run ShardedDataSource.RecoverAsync once the coordinator answers to commit or roll it back everywhere.",
            innerException)
    {
        GlobalId = globalId;
        Shards = shards;
        Coordinator = coordinator;
    }

    /// <summary>Creates an exception with no message.</summary>
    public DistributedTransactionInDoubtException()
        : this("", [], "", null)
    {
    }

    /// <summary>Creates an exception with a message.</summary>
    public DistributedTransactionInDoubtException(string message)
        : this(message, null)
    {
    }

    /// <summary>Creates an exception with a message and a cause.</summary>
    public DistributedTransactionInDoubtException(string message, Exception? innerException)
        : base(message, innerException)
    {
        GlobalId = "";
        Shards = [];
        Coordinator = "";
    }

    /// <summary>The transaction's global id (the prepared transactions' gid).</summary>
    public string GlobalId { get; }

    /// <summary>The shards that hold it prepared.</summary>
    public IReadOnlyList<string> Shards { get; }

    /// <summary>The shard whose decision log decides it.</summary>
    public string Coordinator { get; }
}

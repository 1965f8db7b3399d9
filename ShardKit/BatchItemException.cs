using Npgsql;

namespace ShardKit;

/// <summary>
/// One item of a batch write (<see cref="ShardedConnection.ExecuteBatchAsync{T}"/>, or a routed <c>Execute</c> with a
/// list of keyed items) failed on its shard: <see cref="ItemIndex"/> is its position in the list passed in,
/// <see cref="Shard"/> the shard that refused it, and <see cref="Exception.InnerException"/> the server's error (a
/// <c>PostgresException</c>, such as a 23505 unique violation). Fix or remove that item and run the batch again.
/// </summary>
public sealed class BatchItemException : ShardKitException
{
    /// <summary>Creates an exception with no message.</summary>
    public BatchItemException()
    {
    }

    /// <summary>Creates an exception with a message that says what to do.</summary>
    public BatchItemException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public BatchItemException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    // The server's detail can quote the item's values, so only its code and message text are repeated here.
    internal BatchItemException(int itemIndex, string shard, PostgresException error)
        : base($"Item {itemIndex} of the batch failed on shard '{shard}': {error.SqlState}: {error.MessageText.TrimEnd('.', ' ')}. " +
            "Fix or remove that item and run the batch again.", error)
    {
        ItemIndex = itemIndex;
        Shard = shard;
        Data[ShardDataKey] = shard;
    }

    /// <summary>The failing item's position (from 0) in the list the caller passed.</summary>
    public int ItemIndex { get; } = -1;

    /// <summary>The name of the shard that refused the item.</summary>
    public string Shard { get; } = "";
}

namespace ShardKit;

/// <summary>
/// Buckets cannot be moved as asked: a table without a primary key or replica identity, a shard key type that has no
/// hash placement, a replication slot that is missing or already there. The message names the table or slot and the fix.
/// </summary>
internal sealed class BucketMoveException : ShardKitException
{
    /// <summary>Creates an exception with a message that says what to do.</summary>
    public BucketMoveException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public BucketMoveException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The move's slot or publication is gone (a cancel dropped it): the move cannot resume, only be cancelled.</summary>
    public bool SlotGone { get; init; }
}

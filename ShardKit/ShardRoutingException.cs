namespace ShardKit;

/// <summary>
/// A command could not be sent to a shard: no shard key, a null or unplaceable key, an unknown shard, or a target
/// that conflicts with the open transaction. Thrown before any database is touched; the message names the fix.
/// </summary>
public sealed class ShardRoutingException : ShardKitException
{
    /// <summary>Creates an exception with a message that says what to do.</summary>
    public ShardRoutingException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public ShardRoutingException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates an exception with no message.</summary>
    public ShardRoutingException()
    {
    }
}

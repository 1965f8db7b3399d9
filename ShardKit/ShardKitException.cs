namespace ShardKit;

/// <summary>The base of every exception ShardKit throws for its own reasons (routing, configuration, merging).</summary>
public class ShardKitException : Exception
{
    /// <summary>Creates an exception with no message.</summary>
    public ShardKitException()
    {
    }

    /// <summary>Creates an exception with a message that says what to do.</summary>
    public ShardKitException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public ShardKitException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

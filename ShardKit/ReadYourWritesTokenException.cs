namespace ShardKit;

/// <summary>
/// A read-your-writes token given to <see cref="ShardedConnection.ResumeFrom"/> is not one ShardKit wrote for this data
/// source (cut, edited, or from a data source with other shards). The message says what is wrong and what to do.
/// </summary>
public sealed class ReadYourWritesTokenException : ShardKitException
{
    /// <summary>Creates an exception with a message that says what to do.</summary>
    public ReadYourWritesTokenException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and a cause.</summary>
    public ReadYourWritesTokenException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates an exception with no message.</summary>
    public ReadYourWritesTokenException()
    {
    }
}

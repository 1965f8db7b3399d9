namespace ShardKit;

/// <summary>
/// An id or bucket is not valid: an id that is not positive, a bucket outside the map, an id made for another map.
/// The base of the other id errors; the message names the fix.
/// </summary>
public class ShardIdException : ShardKitException
{
    /// <summary>Creates an exception with no message.</summary>
    public ShardIdException()
    {
    }

    /// <summary>Creates an exception with a message that says what to do.</summary>
    public ShardIdException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public ShardIdException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

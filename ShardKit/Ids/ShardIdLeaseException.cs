namespace ShardKit;

/// <summary>
/// A generator has no valid worker lease: every worker number is taken, or the lease expired without renewal (another
/// process may have taken it over). The message says what to do.
/// </summary>
public sealed class ShardIdLeaseException : ShardIdException
{
    /// <summary>Creates an exception with no message.</summary>
    public ShardIdLeaseException()
    {
    }

    /// <summary>Creates an exception with a message that says what to do.</summary>
    public ShardIdLeaseException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public ShardIdLeaseException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

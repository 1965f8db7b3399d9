namespace ShardKit;

/// <summary>
/// The clock stepped back further than <see cref="ShardIdGeneratorOptions.MaxClockStepBack"/>, or reads a time outside
/// the id range (2025 to 2094). Rather than wait that long for the clock, the generator refuses; the message says how
/// far off the clock is.
/// </summary>
public sealed class ShardIdClockException : ShardIdException
{
    /// <summary>Creates an exception with no message.</summary>
    public ShardIdClockException()
    {
    }

    /// <summary>Creates an exception with a message that says what to do.</summary>
    public ShardIdClockException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public ShardIdClockException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

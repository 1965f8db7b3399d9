namespace ShardKit;

/// <summary>The base of every exception ShardKit throws for its own reasons (routing, configuration, merging).</summary>
public class ShardKitException : Exception
{
    /// <summary>
    /// The <see cref="Exception.Data"/> key under which a failure on a shard carries the shard's name, on errors
    /// ShardKit passes through unchanged (a <c>PostgresException</c> such as a 23505 unique violation, a command
    /// timeout): <c>catch (PostgresException e) when (e.SqlState == "23505") { var shard = e.Data[ShardKitException.ShardDataKey]; }</c>.
    /// </summary>
    public const string ShardDataKey = "ShardKit.Shard";

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

namespace ShardKit;

/// <summary>
/// A call was made on a <see cref="ShardedConnection"/> while another of its operations was still running (a call
/// not yet awaited, or a stream not yet finished or disposed). A connection runs one operation at a time, like an
/// <c>NpgsqlConnection</c>; the call is refused before it opens or touches any shard connection. Create one
/// connection per concurrent operation instead.
/// </summary>
public sealed class ShardedConnectionBusyException : ShardKitException
{
    internal const string Rule =
        "A ShardedConnection runs one operation at a time, and another operation on this connection is still running " +
        "(a call not yet awaited, a stream not yet read to the end or disposed, or a QueryMultiple grid reader not yet " +
        "disposed). Await each call and finish or dispose each stream and grid reader before the next; for concurrent work create one connection per concurrent operation " +
        "(they are cheap: shards.CreateConnection(); their shard connections come from the pools).";

    /// <summary>Creates an exception that states the rule.</summary>
    public ShardedConnectionBusyException()
        : base(Rule)
    {
    }

    /// <summary>Creates an exception with a message that says what to do.</summary>
    public ShardedConnectionBusyException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public ShardedConnectionBusyException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}

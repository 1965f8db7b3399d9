namespace ShardKit;

/// <summary>A shard did not finish within the fan-out's per-shard or overall timeout.</summary>
public sealed class ShardTimeoutException : ShardKitException
{
    /// <summary>Creates an exception naming the shard and the limit it exceeded.</summary>
    public ShardTimeoutException(string shard, TimeSpan timeout, bool overall)
        : base($"Shard '{shard}' did not finish within the {(overall ? "overall" : "per-shard")} timeout of {timeout.TotalMilliseconds:0} ms; " +
               "raise FanOutOptions timeouts, or use FanOutPolicy.PartialResults to keep the other shards' rows.")
    {
        Shard = shard;
    }

    /// <summary>Creates an exception with a message.</summary>
    public ShardTimeoutException(string message)
        : base(message) => Shard = "";

    /// <summary>Creates an exception with a message and a cause.</summary>
    public ShardTimeoutException(string message, Exception? innerException)
        : base(message, innerException) => Shard = "";

    /// <summary>Creates an exception with no message.</summary>
    public ShardTimeoutException() => Shard = "";

    /// <summary>The shard that timed out.</summary>
    public string Shard { get; }
}

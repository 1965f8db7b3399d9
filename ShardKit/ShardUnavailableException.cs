namespace ShardKit;

/// <summary>
/// A shard's circuit breaker is open after repeated connection failures: the command failed fast without waiting for
/// a timeout. It is retried by a probe after the break; check the shard (<c>CheckHealthAsync</c>) or wait.
/// </summary>
public sealed class ShardUnavailableException : ShardKitException
{
    /// <summary>Creates an exception naming the shard and when it will be probed again.</summary>
    public ShardUnavailableException(string shard, DateTimeOffset retryAfter)
        : base($"Shard '{shard}' is unavailable: its connections failed repeatedly, so commands fail fast until {retryAfter:O}, " +
               "when one probe tries it again. Check the server, or use FanOutPolicy.PartialResults to read the other shards.")
    {
        Shard = shard;
        RetryAfter = retryAfter;
    }

    /// <summary>Creates an exception with a message.</summary>
    public ShardUnavailableException(string message)
        : base(message) => Shard = "";

    /// <summary>Creates an exception with a message and a cause.</summary>
    public ShardUnavailableException(string message, Exception? innerException)
        : base(message, innerException) => Shard = "";

    /// <summary>Creates an exception with no message.</summary>
    public ShardUnavailableException() => Shard = "";

    /// <summary>The unavailable shard.</summary>
    public string Shard { get; }

    /// <summary>When a probe may try the shard again.</summary>
    public DateTimeOffset RetryAfter { get; }
}

namespace ShardKit;

/// <summary>
/// A shard could not be reached: opening its connection failed (refused, reset, timed out, or the server refused
/// connections: SQLSTATE class 08, 57P01–57P03, 53300) or the connection broke during the command. <see cref="Shard"/>
/// names it and <see cref="Exception.InnerException"/> holds Npgsql's error. Reads were already retried where safe;
/// repeated failures open the shard's circuit breaker, after which commands fail fast with
/// <see cref="ShardUnavailableException"/> instead. Errors the server raises for the statement itself (a
/// <c>PostgresException</c> such as 23505) and command timeouts are not wrapped: they keep their type and carry the shard
/// in <see cref="Exception.Data"/> under <see cref="ShardKitException.ShardDataKey"/>.
/// </summary>
public sealed class ShardConnectionException : ShardKitException
{
    /// <summary>Creates an exception naming the shard, with a short description of the failure and the failure itself.</summary>
    public ShardConnectionException(string shard, string failure, Exception innerException)
        : base($"Shard '{shard}' could not be reached ({failure}). Check that its server is up and reachable; reads are retried " +
               "where safe and repeated failures open its circuit breaker. Use FanOutPolicy.PartialResults to read the other shards " +
               "meanwhile.", innerException)
    {
        Shard = shard;
    }

    /// <summary>Creates an exception with a message.</summary>
    public ShardConnectionException(string message)
        : base(message) => Shard = "";

    /// <summary>Creates an exception with a message and a cause.</summary>
    public ShardConnectionException(string message, Exception? innerException)
        : base(message, innerException) => Shard = "";

    /// <summary>Creates an exception with no message.</summary>
    public ShardConnectionException() => Shard = "";

    /// <summary>The shard that could not be reached.</summary>
    public string Shard { get; }
}

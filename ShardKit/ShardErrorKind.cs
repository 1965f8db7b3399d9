namespace ShardKit;

/// <summary>What a failure on a shard says about the shard: the one classification retries, the breaker and errors use.</summary>
internal enum ShardErrorKind
{
    /// <summary>The shard could not be reached or dropped the connection: counts against the breaker, worth a retry.</summary>
    ConnectionFailure,

    /// <summary>The command ran longer than its timeout: the query's failure, not the shard's; not retried.</summary>
    Timeout,

    /// <summary>The server answered with an error for the statement (23505, 42P01…): the shard is healthy.</summary>
    Server,

    /// <summary>The caller (or a fan-out's timeout) cancelled the command: proves nothing about the shard.</summary>
    Cancelled,

    /// <summary>Anything else (ShardKit's own errors, mapping errors): says nothing about the shard.</summary>
    Other,
}

namespace ShardKit.Tests.Harness;

/// <summary>No way to get real PostgreSQL shards on this machine; the message names what to install or set.</summary>
public sealed class ShardHarnessUnavailableException(string message) : Exception(message);

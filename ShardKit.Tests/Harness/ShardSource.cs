namespace ShardKit.Tests.Harness;

/// <summary>Where the shards of a test or benchmark run came from.</summary>
public enum ShardSource
{
    /// <summary>Connection strings from <c>SHARDKIT_TEST_SHARDS</c>.</summary>
    Environment,

    /// <summary>PostgreSQL containers started through Testcontainers.</summary>
    Containers,

    /// <summary>Local servers started from the machine's <c>initdb</c>/<c>pg_ctl</c>.</summary>
    LocalServers,
}

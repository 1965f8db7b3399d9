namespace ShardKit.Tests.Harness;

/// <summary>The real PostgreSQL servers one run shares: named <c>s0..sN-1</c>, in order.</summary>
public sealed class TestShardSet
{
    internal TestShardSet(ShardSource source, IReadOnlyList<string> connectionStrings)
    {
        Source = source;
        ConnectionStrings = connectionStrings;
        Names = Enumerable.Range(0, connectionStrings.Count).Select(i => $"s{i}").ToArray();
    }

    /// <summary>How the shards were provided.</summary>
    public ShardSource Source { get; }

    /// <summary>One connection string per shard.</summary>
    public IReadOnlyList<string> ConnectionStrings { get; }

    /// <summary>The shard names, <c>s0</c> to <c>sN-1</c>.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The number of shards.</summary>
    public int Count => ConnectionStrings.Count;
}

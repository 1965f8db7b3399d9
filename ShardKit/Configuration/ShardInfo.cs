namespace ShardKit;

/// <summary>One configured shard: its position, name and connection string (never shown in messages).</summary>
internal sealed record ShardInfo(int Index, string Name, string ConnectionString)
{
    /// <summary>What the shard's spans say about its database and server.</summary>
    public ShardEndpoint Endpoint { get; } = ShardEndpoint.From(ConnectionString);
}

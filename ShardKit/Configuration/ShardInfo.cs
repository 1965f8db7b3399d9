namespace ShardKit;

/// <summary>One configured shard: its position, name, connection string (never shown in messages) and standbys.</summary>
internal sealed record ShardInfo(int Index, string Name, string ConnectionString)
{
    /// <summary>The shard's standbys, in configured order; empty for most shards.</summary>
    public IReadOnlyList<StandbyInfo> Standbys { get; init; } = [];

    /// <summary>What the shard's spans say about its database and server.</summary>
    public ShardEndpoint Endpoint { get; } = ShardEndpoint.From(ConnectionString);
}

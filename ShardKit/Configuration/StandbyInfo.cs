namespace ShardKit;

/// <summary>One configured standby of a shard: its position among the shard's standbys, its name (<c>s0/standby-1</c>) and connection string.</summary>
internal sealed record StandbyInfo(int Index, string Name, string ConnectionString)
{
    /// <summary>What the standby's spans say about its server.</summary>
    public ShardEndpoint Endpoint { get; } = ShardEndpoint.From(ConnectionString);

    public static string NameFor(string shard, int index) => $"{shard}/standby-{index + 1}";
}

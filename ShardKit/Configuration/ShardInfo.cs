namespace ShardKit;

/// <summary>One configured shard: its position, name and connection string (never shown in messages).</summary>
internal sealed record ShardInfo(int Index, string Name, string ConnectionString);

namespace ShardKit;

/// <summary>Who made an id: its bit 9.</summary>
public enum ShardIdSource
{
    /// <summary>A <see cref="ShardIdGenerator"/> in an application process.</summary>
    Application = 0,

    /// <summary>The <c>shardkit_next_id</c> function on a shard (an insert that omitted the id).</summary>
    Database = 1,
}

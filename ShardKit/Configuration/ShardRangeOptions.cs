namespace ShardKit;

/// <summary>A range <c>[From, To)</c> in configuration, as text parsed by <see cref="ShardKitOptions.KeyType"/>.</summary>
public sealed class ShardRangeOptions
{
    /// <summary>The lowest key, inclusive; empty for no lower bound.</summary>
    public string? From { get; set; }

    /// <summary>The first key after the range, exclusive; empty for no upper bound.</summary>
    public string? To { get; set; }

    /// <summary>The shard that owns the range.</summary>
    public string Shard { get; set; } = "";
}

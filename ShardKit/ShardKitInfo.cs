namespace ShardKit;

/// <summary>Names ShardKit uses for itself: its <see cref="System.Diagnostics.ActivitySource"/>, <see cref="System.Diagnostics.Metrics.Meter"/> and prefixes.</summary>
public static class ShardKitInfo
{
    /// <summary>The name of ShardKit's activity source and meter.</summary>
    public const string Name = "ShardKit";
}

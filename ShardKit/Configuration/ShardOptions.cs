namespace ShardKit;

/// <summary>One shard in configuration: its name and its Npgsql connection string.</summary>
public sealed class ShardOptions
{
    /// <summary>The shard's name, unique in the map (used by <c>OnShard</c>, list and range maps, telemetry).</summary>
    public string Name { get; set; } = "";

    /// <summary>The Npgsql connection string of the shard's primary (multi-host strings are allowed).</summary>
    public string ConnectionString { get; set; } = "";
}

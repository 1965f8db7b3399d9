namespace ShardKit;

/// <summary>One shard in configuration: its name, its primary's Npgsql connection string and its standbys'.</summary>
public sealed class ShardOptions
{
    /// <summary>The shard's name, unique in the map (used by <c>OnShard</c>, list and range maps, telemetry).</summary>
    public string Name { get; set; } = "";

    /// <summary>The Npgsql connection string of the shard's primary (multi-host strings are allowed).</summary>
    public string ConnectionString { get; set; } = "";

    /// <summary>
    /// Connection strings of the shard's streaming standbys (hot_standby on), each its own pool named
    /// <c>shard/standby-1</c>, … Reads use them by <see cref="ReplicaOptions.ReadPolicy"/>; none by default.
    /// </summary>
    public IList<string> Standbys { get; } = new List<string>();
}

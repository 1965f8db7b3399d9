namespace ShardKit;

/// <summary>A row of a multi-shard read tagged with the name of the shard it came from.</summary>
/// <param name="Shard">The shard that returned the row (for a combined group: the shard of its first row).</param>
/// <param name="Row">The row.</param>
public readonly record struct ShardRow<T>(string Shard, T Row);

namespace ShardKit;

/// <summary>One shard's failure within a multi-shard operation.</summary>
/// <param name="Shard">The name of the shard that failed.</param>
/// <param name="Error">What went wrong there.</param>
public sealed record ShardFailure(string Shard, Exception Error);

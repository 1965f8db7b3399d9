namespace ShardKit;

/// <summary>Why a load failed: the row and property at fault (input errors) and the shards that failed (shard errors).</summary>
internal sealed record BulkFault(long? RowIndex, string? Property, IReadOnlyList<ShardFailure> Failures);

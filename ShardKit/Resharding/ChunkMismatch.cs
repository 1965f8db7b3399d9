namespace ShardKit;

/// <summary>A (table, bucket) chunk whose rows differ between source and target.</summary>
/// <param name="Table">The quoted <c>"schema"."name"</c> of the table.</param>
/// <param name="Bucket">The bucket.</param>
/// <param name="SourceRows">The chunk's rows on the source.</param>
/// <param name="TargetRows">The chunk's rows on the target.</param>
internal sealed record ChunkMismatch(string Table, int Bucket, long SourceRows, long TargetRows);

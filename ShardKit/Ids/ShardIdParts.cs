namespace ShardKit;

/// <summary>The fields of a ShardKit id, from <see cref="ShardId.Decode"/>.</summary>
/// <param name="Timestamp">When the id was made, to the millisecond (a generator may run slightly ahead of its clock).</param>
/// <param name="Bucket">The hash bucket of the row's shard key; for strategies other than hash, the shard index.</param>
/// <param name="Source">Whether an application generator or a shard's database function made it.</param>
/// <param name="Worker">The leased worker number of the generator (0-31); null for database ids.</param>
/// <param name="Sequence">The sequence within the millisecond: 0-15 for application ids, 0-511 for database ids.</param>
public readonly record struct ShardIdParts(DateTimeOffset Timestamp, int Bucket, ShardIdSource Source, int? Worker, int Sequence);

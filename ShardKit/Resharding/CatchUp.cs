using NpgsqlTypes;

namespace ShardKit;

/// <summary>What one catch-up applied: the row changes sent to the target and the source position it confirmed to the slot.</summary>
/// <param name="Changes">Row changes of the moving buckets applied to the target.</param>
/// <param name="LastLsn">The source WAL position up to which every change is applied (and confirmed to the slot).</param>
internal sealed record CatchUp(long Changes, NpgsqlLogSequenceNumber LastLsn);

namespace ShardKit;

/// <summary>
/// A half-open key range <c>[From, To)</c> owned by one shard. A null <see cref="From"/> is unbounded below, a null
/// <see cref="To"/> unbounded above. The ranges of a map must tile the keys: no gaps, no overlaps.
/// </summary>
/// <param name="From">The lowest key in the range, inclusive; null for no lower bound.</param>
/// <param name="To">The first key after the range, exclusive; null for no upper bound.</param>
/// <param name="Shard">The name of the shard that owns the range.</param>
public sealed record ShardRange(ShardKeyValue? From, ShardKeyValue? To, string Shard);


namespace ShardKit;

/// <summary>Routing by a ShardKit id alone.</summary>
public sealed partial class ShardedConnection
{
    /// <summary>
    /// Targets the shard that owns the row with id <paramref name="id"/>, read from the bucket the id carries (no lookup).
    /// Under a stored map each command finds that owner by the current map, and its writes name the bucket to the
    /// shard's fence. Throws <see cref="ShardIdException"/> when <paramref name="id"/> is not a ShardKit id of this map.
    /// </summary>
    public ShardScope ForId(long id) => new(this, id);
}

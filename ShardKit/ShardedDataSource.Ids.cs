
namespace ShardKit;

/// <summary>Placement by a ShardKit id alone.</summary>
public sealed partial class ShardedDataSource
{
    /// <summary>
    /// The name of the shard that owns the row with id <paramref name="id"/>; throws <see cref="ShardIdException"/> when
    /// it is not a ShardKit id of this map.
    /// </summary>
    public string ShardForId(long id) => Map.ShardNames[IdRouting.ShardOf(Map, id)];
}

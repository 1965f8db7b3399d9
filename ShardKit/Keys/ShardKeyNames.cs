using System.Collections.Concurrent;

namespace ShardKit;

/// <summary>
/// The <c>[ShardKey]</c> member names one data source knows: those of the entities registered with
/// <see cref="ShardedDataSourceBuilder.AddEntity{T}"/> and of every keyed type it has routed (result types, entity
/// parameters, batch items). A command whose parameters carry one of these names routes by it even without a typed
/// result, as <c>Execute</c> and <c>ExecuteScalar</c> have none.
/// </summary>
internal sealed class ShardKeyNames
{
    private readonly ConcurrentDictionary<Type, bool> _types = new();
    private readonly Lock _gate = new();
    private ExpectedKey[] _keys = [];

    /// <summary>The known key names, one entry per name (case-insensitive).</summary>
    public ExpectedKey[] Keys => Volatile.Read(ref _keys);

    /// <summary>Adds the key of <paramref name="member"/>'s type; cheap when the type is known already.</summary>
    public void Remember(ShardKeyMember? member)
    {
        if (member is null || _types.ContainsKey(member.DeclaringType))
        {
            return;
        }

        lock (_gate)
        {
            if (!_types.TryAdd(member.DeclaringType, true))
            {
                return;
            }

            var keys = _keys;
            var same = Array.FindIndex(keys, k => string.Equals(k.Name, member.Name, StringComparison.OrdinalIgnoreCase));
            Volatile.Write(ref _keys, same < 0 ? [.. keys, member.Expected] : [.. keys[..same], keys[same].With(member), .. keys[(same + 1)..]]);
        }
    }
}

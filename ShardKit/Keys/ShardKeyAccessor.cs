using System.Reflection;

namespace ShardKit;

/// <summary>
/// The shard key reader of <typeparamref name="T"/>, compiled once per closed type: reading a key from a typed
/// entity neither boxes nor allocates.
/// </summary>
internal static class ShardKeyAccessor<T>
{
    private static readonly ShardKitException? DefinitionError;
    private static readonly Func<T, ShardKeyValue>? Reader;

#pragma warning disable CA1810 // the definition error must be captured, not thrown as a TypeInitializationException
    static ShardKeyAccessor()
    {
        try
        {
            Member = ShardKeyMember.For(typeof(T));
            if (Member is not null)
            {
                const BindingFlags flags = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;
                Reader = KeyReaders.Compile<T>(typeof(T), typeof(T).GetMember(Member.Name, flags)[0]);
            }
        }
        catch (ShardKitException e)
        {
            DefinitionError = e;
        }
    }
#pragma warning restore CA1810

    public static ShardKeyMember? Member { get; }

    /// <summary>True when <typeparamref name="T"/> declares a usable <c>[ShardKey]</c>.</summary>
    public static bool HasKey => Reader is not null;

    /// <summary>The key of <paramref name="entity"/>; throws when the type has no key or the key is null.</summary>
    public static ShardKeyValue Read(T entity)
    {
        var key = ReadOrNone(entity);
        return key.Kind != ShardKeyKind.None ? key : throw Member!.NullKey();
    }

    /// <summary>The key of <paramref name="entity"/>, kind None when it is null; throws when the type has no key.</summary>
    public static ShardKeyValue ReadOrNone(T entity) => Reader is not null ? Reader(entity) : throw NoKey();

    /// <summary>Throws when <typeparamref name="T"/> has no usable <c>[ShardKey]</c>.</summary>
    public static void EnsureKey()
    {
        if (Reader is null)
        {
            throw NoKey();
        }
    }

    private static ShardKitException NoKey() => DefinitionError ?? new ShardRoutingException(
        $"{typeof(T).Name} has no [ShardKey]; add [ShardKey] to the property that places it, or target shards " +
        "explicitly with ForKey(key), OnShard(name) or AllShards().");
}

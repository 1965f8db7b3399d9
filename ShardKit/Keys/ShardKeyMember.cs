using System.Collections.Concurrent;
using System.Linq.Expressions;
using System.Reflection;

namespace ShardKit;

/// <summary>
/// The <c>[ShardKey]</c> property (or field) of one type, found once and compiled into a reader; no reflection runs on
/// the routing path afterwards.
/// </summary>
internal sealed class ShardKeyMember
{
    private static readonly ConcurrentDictionary<Type, Lazy<ShardKeyMember?>> Cache = new();

    private ShardKeyMember(Type declaringType, MemberInfo member, Type valueType, string column)
    {
        DeclaringType = declaringType;
        Name = member.Name;
        ValueType = valueType;
        Column = column;
        Kind = KeyReaders.KindOf(valueType);
        Expected = new ExpectedKey(this);
        ReadBoxed = KeyReaders.Compile<object>(declaringType, member);
    }

    public Type DeclaringType { get; }

    public string Name { get; }

    public Type ValueType { get; }

    /// <summary>The kind of key the declared type places as; a key given by name must be of this kind.</summary>
    public ShardKeyKind Kind { get; }

    /// <summary>What a parameter carrying this key by name must hold.</summary>
    public ExpectedKey Expected { get; }

    /// <summary>The column holding the key: the attribute's name, else the member name in snake_case.</summary>
    public string Column { get; }

    /// <summary>Reads the key from an instance of <see cref="DeclaringType"/>; <c>default</c> (kind None) when it is null.</summary>
    public Func<object, ShardKeyValue> ReadBoxed { get; }

    /// <summary>The type's <c>[ShardKey]</c> member, or null when it has none. Two of them is a configuration error.</summary>
    public static ShardKeyMember? For(Type type) =>
        Cache.GetOrAdd(type, static t => new Lazy<ShardKeyMember?>(() => Find(t))).Value;

    /// <summary>Reads the key or throws an error that names the member when it is null.</summary>
    public ShardKeyValue Read(object instance)
    {
        var key = ReadBoxed(instance);
        return key.Kind != ShardKeyKind.None ? key : throw NullKey();
    }

    public ShardRoutingException NullKey() => new(
        $"{DeclaringType.Name}.{Name} is the shard key and it is null; a row cannot be placed without its key. " +
        "Set it, or target a shard explicitly with OnShard(name).");

    private static ShardKeyMember? Find(Type type)
    {
        const BindingFlags flags = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;
        var marked = type.GetProperties(flags).Cast<MemberInfo>()
            .Concat(type.GetFields(flags))
            .Where(m => m.IsDefined(typeof(ShardKeyAttribute), inherit: true))
            .ToArray();
        if (marked.Length == 0)
        {
            return null;
        }

        if (marked.Length > 1)
        {
            throw new ShardConfigurationException(
                $"{type.Name} declares {marked.Length} [ShardKey] members ({string.Join(", ", marked.Select(m => m.Name))}); " +
                "a type has exactly one shard key. Keep [ShardKey] on the one that places the row.");
        }

        var member = marked[0];
        var valueType = member is PropertyInfo p ? p.PropertyType : ((FieldInfo)member).FieldType;
        if (!KeyReaders.Supports(valueType))
        {
            throw new ShardConfigurationException(
                $"{type.Name}.{member.Name} is marked [ShardKey] but its type {valueType.Name} cannot be placed; " +
                "use short, int, long, Guid or string (DateTime and DateTimeOffset with range or list sharding).");
        }

        var attribute = member.GetCustomAttribute<ShardKeyAttribute>(inherit: true)!;
        return new ShardKeyMember(type, member, valueType, attribute.Column ?? SnakeCase.From(member.Name));
    }
}

using System.Collections;
using System.Collections.Concurrent;
using System.Reflection;
using Dapper;

namespace ShardKit;

/// <summary>
/// How the shard key is found in one parameter type, worked out once and cached: the parameter's own
/// <c>[ShardKey]</c>, a batch of keyed items, or a member named like a key (the result type's <c>[ShardKey]</c>, or
/// a key name the data source knows). Reading the key through a plan neither reflects nor boxes.
/// </summary>
internal sealed class ParameterPlan
{
    private static readonly ConcurrentDictionary<(Type Parameters, Type? Result), ParameterPlan> Cache = new();
    private static readonly ConcurrentDictionary<(Type Parameters, string Name), ParameterPlan> ByNameCache = new();

    private ParameterPlan(ParameterPlanKind kind, string? memberName = null, Func<object, ShardKeyValue>? readScalar = null,
        Func<object, object?>? readBoxed = null, Type? elementType = null, ShardKeyMember? itemKey = null, Type? memberType = null)
    {
        Kind = kind;
        MemberName = memberName;
        ReadScalar = readScalar;
        ReadBoxed = readBoxed;
        ElementType = elementType;
        ItemKey = itemKey;
        MemberType = memberType;
    }

    public ParameterPlanKind Kind { get; }

    /// <summary>The parameter member that carries the key (for kind None: the key name that was looked for, if any).</summary>
    public string? MemberName { get; }

    /// <summary>Reads a scalar key from the parameter object (kind None when null).</summary>
    public Func<object, ShardKeyValue>? ReadScalar { get; }

    /// <summary>Reads the key member boxed: a collection of keys, or an <c>object</c>-typed member.</summary>
    public Func<object, object?>? ReadBoxed { get; }

    /// <summary>The element type of a key collection.</summary>
    public Type? ElementType { get; }

    /// <summary>The key of each item in a batch.</summary>
    public ShardKeyMember? ItemKey { get; }

    /// <summary>The declared type of the key member, for messages.</summary>
    public Type? MemberType { get; }

    /// <summary>The <c>[ShardKey]</c> this plan routes by: the parameter's own, the batch item's, or the result type's.</summary>
    public ShardKeyMember? Key { get; private init; }

    /// <summary>What a key found by name must hold; null when the key is read from its own declared member.</summary>
    public ExpectedKey? Expected { get; private init; }

    /// <summary>The plan for a parameter type and a result type whose <c>[ShardKey]</c> names the key member.</summary>
    public static ParameterPlan For(Type parameterType, Type? resultType) =>
        Cache.GetOrAdd((parameterType, resultType), static k => Build(k.Parameters, k.Result is null ? null : ShardKeyMember.For(k.Result)));

    /// <summary>The plan that reads a member named <paramref name="keyName"/> (kind None when there is none).</summary>
    public static ParameterPlan ForName(Type parameterType, string keyName) =>
        ByNameCache.GetOrAdd((parameterType, keyName), static k => BuildByName(k.Parameters, k.Name));

    private static ParameterPlan Build(Type parameterType, ShardKeyMember? resultKey)
    {
        if (ShardKeyMember.For(parameterType) is { } own)
        {
            return new ParameterPlan(ParameterPlanKind.Scalar, own.Name, own.ReadBoxed, memberType: own.ValueType) { Key = own };
        }

        if (parameterType != typeof(string) && typeof(IEnumerable).IsAssignableFrom(parameterType)
            && !typeof(IDictionary).IsAssignableFrom(parameterType) && parameterType != typeof(DynamicParameters)
            && ElementTypeOf(parameterType) is { } item && ShardKeyMember.For(item) is { } itemKey)
        {
            return new ParameterPlan(ParameterPlanKind.Batch, itemKey: itemKey) { Key = itemKey };
        }

        if (resultKey is null)
        {
            return new ParameterPlan(ParameterPlanKind.None);
        }

        var byName = BuildByName(parameterType, resultKey.Name);
        return new ParameterPlan(byName.Kind, byName.MemberName, byName.ReadScalar, byName.ReadBoxed, byName.ElementType,
            memberType: byName.MemberType) { Key = resultKey, Expected = resultKey.Expected };
    }

    private static ParameterPlan BuildByName(Type parameterType, string keyName)
    {
        if (parameterType == typeof(DynamicParameters) || typeof(IDictionary<string, object?>).IsAssignableFrom(parameterType))
        {
            return new ParameterPlan(ParameterPlanKind.ByName, keyName);
        }

        const BindingFlags flags = BindingFlags.Instance | BindingFlags.Public;
        var member = (MemberInfo?)parameterType.GetProperty(keyName, flags) ?? parameterType.GetField(keyName, flags);
        member ??= parameterType.GetProperties(flags).FirstOrDefault(p => string.Equals(p.Name, keyName, StringComparison.OrdinalIgnoreCase));
        if (member is null)
        {
            return new ParameterPlan(ParameterPlanKind.None, keyName);
        }

        var memberType = member is PropertyInfo p ? p.PropertyType : ((FieldInfo)member).FieldType;
        if (KeyReaders.Supports(memberType))
        {
            return new ParameterPlan(ParameterPlanKind.Scalar, member.Name, KeyReaders.Compile<object>(parameterType, member), memberType: memberType);
        }

        var boxed = KeyReaders.CompileBoxed(parameterType, member);
        return memberType != typeof(string) && typeof(IEnumerable).IsAssignableFrom(memberType)
            ? new ParameterPlan(ParameterPlanKind.Collection, member.Name, readBoxed: boxed, elementType: ElementTypeOf(memberType), memberType: memberType)
            : new ParameterPlan(ParameterPlanKind.Boxed, member.Name, readBoxed: boxed, memberType: memberType);
    }

    internal static Type? ElementTypeOf(Type enumerable)
    {
        if (enumerable.IsArray)
        {
            return enumerable.GetElementType();
        }

        var generic = enumerable.IsGenericType && enumerable.GetGenericTypeDefinition() == typeof(IEnumerable<>)
            ? enumerable
            : enumerable.GetInterfaces().FirstOrDefault(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IEnumerable<>));
        return generic?.GetGenericArguments()[0];
    }
}

/// <summary>Where a parameter object keeps its shard key.</summary>
internal enum ParameterPlanKind
{
    /// <summary>Nowhere ShardKit can see.</summary>
    None,

    /// <summary>A scalar key member.</summary>
    Scalar,

    /// <summary>A member typed <c>object</c> (or otherwise untyped); converted at run time.</summary>
    Boxed,

    /// <summary>A collection of keys (<c>= any(@Key)</c>): split per shard.</summary>
    Collection,

    /// <summary>A batch of keyed items for one statement each: grouped per shard.</summary>
    Batch,

    /// <summary><see cref="DynamicParameters"/> or a dictionary: looked up by name at run time.</summary>
    ByName,
}

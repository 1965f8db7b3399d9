using System.Linq.Expressions;
using System.Reflection;

namespace ShardKit;

/// <summary>Compiles member reads into <see cref="ShardKeyValue"/> without boxing; null reads become kind None.</summary>
internal static class KeyReaders
{
    private static readonly Dictionary<Type, MethodInfo> Converters = typeof(KeyReaders)
        .GetMethods(BindingFlags.Static | BindingFlags.NonPublic)
        .Where(m => m.Name == nameof(Convert))
        .ToDictionary(m => m.GetParameters()[0].ParameterType);

    public static bool Supports(Type type) => Converters.ContainsKey(type);

    /// <summary>The kind of key a supported CLR type places as (nullable forms like their values); None for others.</summary>
    public static ShardKeyKind KindOf(Type type) => (Nullable.GetUnderlyingType(type) ?? type) switch
    {
        var t when t == typeof(long) || t == typeof(int) || t == typeof(short) => ShardKeyKind.Integer,
        var t when t == typeof(string) => ShardKeyKind.String,
        var t when t == typeof(Guid) => ShardKeyKind.Guid,
        var t when t == typeof(DateTime) => ShardKeyKind.DateTime,
        var t when t == typeof(DateTimeOffset) => ShardKeyKind.DateTimeOffset,
        _ => ShardKeyKind.None,
    };

    /// <summary>Compiles <c>(TInstance x) =&gt; Convert(((DeclaringType)x).Member)</c>.</summary>
    public static Func<TInstance, ShardKeyValue> Compile<TInstance>(Type declaringType, MemberInfo member)
    {
        var instance = Expression.Parameter(typeof(TInstance), "instance");
        Expression typed = typeof(TInstance) == declaringType ? instance : Expression.Convert(instance, declaringType);
        var read = Expression.MakeMemberAccess(typed, member);
        var body = Expression.Call(Converters[read.Type], read);
        return Expression.Lambda<Func<TInstance, ShardKeyValue>>(body, instance).Compile();
    }

    /// <summary>Compiles a reader of any member (key or not) as a boxed value, for parameter objects.</summary>
    public static Func<object, object?> CompileBoxed(Type declaringType, MemberInfo member)
    {
        var instance = Expression.Parameter(typeof(object), "instance");
        var read = Expression.MakeMemberAccess(Expression.Convert(instance, declaringType), member);
        return Expression.Lambda<Func<object, object?>>(Expression.Convert(read, typeof(object)), instance).Compile();
    }

    private static ShardKeyValue Convert(long value) => ShardKeyValue.FromInt64(value);

    private static ShardKeyValue Convert(int value) => ShardKeyValue.FromInt64(value);

    private static ShardKeyValue Convert(short value) => ShardKeyValue.FromInt64(value);

    private static ShardKeyValue Convert(Guid value) => ShardKeyValue.FromGuid(value);

    private static ShardKeyValue Convert(DateTime value) => ShardKeyValue.FromDateTime(value);

    private static ShardKeyValue Convert(DateTimeOffset value) => ShardKeyValue.FromDateTimeOffset(value);

    private static ShardKeyValue Convert(string? value) => value is null ? default : ShardKeyValue.FromString(value);

    private static ShardKeyValue Convert(long? value) => value.HasValue ? ShardKeyValue.FromInt64(value.Value) : default;

    private static ShardKeyValue Convert(int? value) => value.HasValue ? ShardKeyValue.FromInt64(value.Value) : default;

    private static ShardKeyValue Convert(short? value) => value.HasValue ? ShardKeyValue.FromInt64(value.Value) : default;

    private static ShardKeyValue Convert(Guid? value) => value.HasValue ? ShardKeyValue.FromGuid(value.Value) : default;

    private static ShardKeyValue Convert(DateTime? value) => value.HasValue ? ShardKeyValue.FromDateTime(value.Value) : default;

    private static ShardKeyValue Convert(DateTimeOffset? value) => value.HasValue ? ShardKeyValue.FromDateTimeOffset(value.Value) : default;
}

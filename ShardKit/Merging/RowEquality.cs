using System.Linq.Expressions;
using System.Reflection;

namespace ShardKit;

/// <summary>
/// The equality <see cref="MergePlan{T}.Distinct"/> uses by default: a row's own equality when it has one (records,
/// structs, <see cref="IEquatable{T}"/>, an Equals override, scalars), otherwise value equality of its public readable
/// properties and fields, compiled once per type — a plain class mapped by Dapper would otherwise compare by reference
/// and keep every duplicate. Dynamic rows compare column by column. <c>bytea</c> values compare by content.
/// </summary>
internal static class RowEquality<T>
{
    public static readonly IEqualityComparer<T> Default = Create();

    private static IEqualityComparer<T> Create()
    {
        var type = typeof(T);
        if (type == typeof(byte[]))
        {
            return (IEqualityComparer<T>)(object)BytesEquality.Instance;
        }

        if (type == typeof(object) || type.IsInterface || type.IsAbstract)
        {
            return (IEqualityComparer<T>)(object)DynamicRowEquality.Instance;
        }

        if (type.IsValueType || HasOwnEquality(type))
        {
            return EqualityComparer<T>.Default;
        }

        var members = type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanRead && p.GetIndexParameters().Length == 0).Cast<MemberInfo>()
            .Concat(type.GetFields(BindingFlags.Public | BindingFlags.Instance)).ToList();
        return members.Count == 0 ? EqualityComparer<T>.Default : new MemberEquality(members);
    }

    private static bool HasOwnEquality(Type type) =>
        typeof(IEquatable<>).MakeGenericType(type).IsAssignableFrom(type)
        || type.GetMethod(nameof(Equals), [typeof(object)])?.DeclaringType != typeof(object);

    /// <summary>Equal when every member is equal by its own default equality (bytea by content).</summary>
    private sealed class MemberEquality : IEqualityComparer<T>
    {
        private readonly Func<T, T, bool> _equals;
        private readonly Func<T, int> _hash;

        public MemberEquality(List<MemberInfo> members)
        {
            var x = Expression.Parameter(typeof(T), "x");
            var y = Expression.Parameter(typeof(T), "y");
            Expression equal = Expression.Constant(true);
            Expression hash = Expression.Constant(17);
            foreach (var member in members)
            {
                var memberType = member is PropertyInfo p ? p.PropertyType : ((FieldInfo)member).FieldType;
                var comparer = Expression.Constant(ComparerFor(memberType));
                var comparerType = typeof(IEqualityComparer<>).MakeGenericType(memberType);
                var a = Expression.MakeMemberAccess(x, member);
                var b = Expression.MakeMemberAccess(y, member);
                equal = Expression.AndAlso(equal, Expression.Call(comparer, comparerType.GetMethod(nameof(Equals), [memberType, memberType])!, a, b));
                var memberHash = Expression.Call(comparer, comparerType.GetMethod(nameof(GetHashCode), [memberType])!, a);
                hash = Expression.Add(Expression.Multiply(hash, Expression.Constant(31)), memberHash);
            }

            _equals = Expression.Lambda<Func<T, T, bool>>(equal, x, y).Compile();
            _hash = Expression.Lambda<Func<T, int>>(hash, x).Compile();
        }

        public bool Equals(T? x, T? y) => ReferenceEquals(x, y) || (x is not null && y is not null && _equals(x, y));

        public int GetHashCode(T obj) => _hash(obj);

        private static object ComparerFor(Type memberType) => memberType == typeof(byte[])
            ? BytesEquality.Instance
            : typeof(EqualityComparer<>).MakeGenericType(memberType).GetProperty(nameof(EqualityComparer<int>.Default))!.GetValue(null)!;
    }
}

/// <summary><c>bytea</c> values: equal when their bytes are.</summary>
internal sealed class BytesEquality : IEqualityComparer<byte[]>
{
    public static readonly BytesEquality Instance = new();

    public bool Equals(byte[]? x, byte[]? y) => ReferenceEquals(x, y) || (x is not null && y is not null && x.AsSpan().SequenceEqual(y));

    public int GetHashCode(byte[] obj)
    {
        if (obj is null)
        {
            return 0;
        }

        var hash = new HashCode();
        hash.AddBytes(obj);
        return hash.ToHashCode();
    }
}

/// <summary>Dynamic rows (Dapper's, which compare by reference): equal when they hold the same columns and values.</summary>
internal sealed class DynamicRowEquality : IEqualityComparer<object>
{
    public static readonly DynamicRowEquality Instance = new();

    public new bool Equals(object? x, object? y)
    {
        if (x is not IDictionary<string, object?> a || y is not IDictionary<string, object?> b)
        {
            return x is byte[] bx && y is byte[] by ? BytesEquality.Instance.Equals(bx, by) : object.Equals(x, y);
        }

        return a.Count == b.Count && a.All(column => b.TryGetValue(column.Key, out var other) && Equals(column.Value, other));
    }

    public int GetHashCode(object obj) => obj switch
    {
        IDictionary<string, object?> row => row.Aggregate(row.Count, (hash, column) => (hash * 31) + GetHashCode(column.Value ?? 0)),
        byte[] bytes => BytesEquality.Instance.GetHashCode(bytes),
        _ => obj.GetHashCode(),
    };
}

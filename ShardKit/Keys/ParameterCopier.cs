using System.Collections.Concurrent;
using System.Reflection;
using Dapper;

namespace ShardKit;

/// <summary>Copies a parameter object into <see cref="DynamicParameters"/> with one member replaced (a shard's share of keys).</summary>
internal static class ParameterCopier
{
    private static readonly ConcurrentDictionary<Type, (string Name, Func<object, object?> Read)[]> Members = new();

    public static DynamicParameters WithMember(object parameters, string member, object? value)
    {
        var copy = new DynamicParameters();
        foreach (var (name, read) in Members.GetOrAdd(parameters.GetType(), Discover))
        {
            copy.Add(name, string.Equals(name, member, StringComparison.Ordinal) ? value : read(parameters));
        }

        return copy;
    }

    private static (string, Func<object, object?>)[] Discover(Type type) =>
        type.GetProperties(BindingFlags.Instance | BindingFlags.Public)
            .Where(p => p.CanRead && p.GetIndexParameters().Length == 0)
            .Cast<MemberInfo>()
            .Concat(type.GetFields(BindingFlags.Instance | BindingFlags.Public))
            .Select(m => (m.Name, KeyReaders.CompileBoxed(type, m)))
            .ToArray();
}

using System.ComponentModel.DataAnnotations.Schema;
using System.Reflection;

namespace ShardKit;

/// <summary>
/// The columns of <typeparamref name="T"/>, found once per closed type: every public readable instance property (and a
/// public <c>[ShardKey]</c> field) that is not <see cref="NotMappedAttribute"/>, named by <see cref="ShardKeyAttribute.Column"/> (the key),
/// <see cref="ShardColumnAttribute"/>, <see cref="ColumnAttribute"/>, else its name in snake_case.
/// </summary>
internal static class BulkRowMap<T>
{
    private static readonly ShardKitException? DefinitionError;
    private static readonly BulkMember<T>[] All = [];

#pragma warning disable CA1810 // the definition error must be captured, not thrown as a TypeInitializationException
    static BulkRowMap()
    {
        try
        {
            All = Find();
        }
        catch (ShardKitException e)
        {
            DefinitionError = e;
        }
    }
#pragma warning restore CA1810

    /// <summary>The mapped properties in declaration order; throws when the type cannot be mapped.</summary>
    public static IReadOnlyList<BulkMember<T>> Members => DefinitionError is null ? All : throw DefinitionError;

    private static BulkMember<T>[] Find()
    {
        // A [ShardKey] field is loaded too: leaving the key's column out would place rows on a shard with no key.
        var members = typeof(T).GetProperties(BindingFlags.Instance | BindingFlags.Public)
            .Where(p => p.GetMethod is { IsPublic: true } && p.GetIndexParameters().Length == 0)
            .Cast<MemberInfo>()
            .Concat(typeof(T).GetFields(BindingFlags.Instance | BindingFlags.Public).Where(f => f.IsDefined(typeof(ShardKeyAttribute), inherit: true)))
            .Where(m => !m.IsDefined(typeof(NotMappedAttribute), inherit: true))
            .Select(m => new BulkMember<T>(m, ColumnOf(m)))
            .ToArray();
        if (members.Length == 0)
        {
            throw new ShardConfigurationException(
                $"{typeof(T).Name} has no public readable property to load; bulk loads write its public properties as columns.");
        }

        var duplicate = members.GroupBy(m => m.Column, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ShardConfigurationException(
                $"{typeof(T).Name} maps {string.Join(" and ", duplicate.Select(m => m.Property))} to the same column '{duplicate.Key}'; " +
                "name one of them with [ShardColumn(\"…\")] or leave it out with [NotMapped].");
        }

        return members;
    }

    private static string ColumnOf(MemberInfo member) =>
        member.GetCustomAttribute<ShardKeyAttribute>(inherit: true)?.Column
        ?? member.GetCustomAttribute<ShardColumnAttribute>(inherit: true)?.Name
        ?? member.GetCustomAttribute<ColumnAttribute>(inherit: true)?.Name
        ?? SnakeCase.From(member.Name);
}

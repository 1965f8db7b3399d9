using System.Data;
using System.Globalization;
using System.Reflection;
using Dapper;

namespace ShardKit;

/// <summary>One positional parameter of a <see cref="BatchPlan"/>: how to read it from an item and its Dapper type.</summary>
internal sealed class BatchParameter(Func<object, object?> read, DbType? dbType)
{
    private static readonly HashSet<Type> Plain =
    [
        typeof(bool), typeof(byte), typeof(sbyte), typeof(short), typeof(ushort), typeof(int), typeof(uint), typeof(long),
        typeof(ulong), typeof(float), typeof(double), typeof(decimal), typeof(string), typeof(Guid), typeof(DateTime),
        typeof(DateTimeOffset), typeof(byte[]),
    ];

    public Func<object, object?> Read { get; } = read;

    public DbType? DbType { get; } = dbType;

    /// <summary>The parameter for <paramref name="property"/>, or null when its type is not a plain value Dapper passes as it is.</summary>
    public static BatchParameter? For(Type itemType, PropertyInfo property)
    {
        var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
        var enumType = type.IsEnum ? type : null;
        var valueType = enumType is null ? type : Enum.GetUnderlyingType(type);
        if (!Plain.Contains(valueType) || SqlMapper.HasTypeHandler(type))
        {
            return null;
        }

        // The same DbType Dapper's own parameter binder sets, so both paths send the same PostgreSQL type.
#pragma warning disable CS0618 // Dapper marks its type lookup for internal use; it is the one source of its mapping.
        var dbType = SqlMapper.LookupDbType(type, property.Name, demand: false, out var handler);
#pragma warning restore CS0618
        if (handler is not null)
        {
            return null;
        }

        var read = KeyReaders.CompileBoxed(itemType, property);
        if (enumType is not null)
        {
            // Dapper sends an enum as its underlying number.
            var inner = read;
            read = item => inner(item) is { } value ? Convert.ChangeType(value, valueType, CultureInfo.InvariantCulture) : null;
        }

        // Dapper leaves DbType.Time unset (TimeSpan); no plain type here maps to it.
        return new BatchParameter(read, dbType);
    }
}

using System.Collections.Concurrent;
using System.Data;
using System.Reflection;
using Dapper;

namespace ShardKit;

/// <summary>
/// How one statement binds one item type in a pipelined batch, worked out once per type and SQL and cached: the text
/// with <c>$n</c> placeholders and a compiled reader per placeholder, with the <see cref="DbType"/> Dapper would give it.
/// </summary>
internal sealed class BatchPlan
{
    private static readonly ConcurrentDictionary<(Type Item, string Sql), BatchPlan?> Cache = new();

    private BatchPlan(string text, BatchParameter[] parameters)
    {
        Text = text;
        Parameters = parameters;
    }

    /// <summary>The statement with positional placeholders.</summary>
    public string Text { get; }

    /// <summary>The readers of <c>$1</c>, <c>$2</c>, … in order.</summary>
    public BatchParameter[] Parameters { get; }

    /// <summary>
    /// The plan for items of <paramref name="itemType"/>, or null when only Dapper's per-row path binds the statement
    /// as Dapper would: several statements in one text, <c>{=literal}</c> replacements, list expansion, type handlers,
    /// or member types Dapper treats specially.
    /// </summary>
    public static BatchPlan? For(Type itemType, string sql) =>
        Cache.GetOrAdd((itemType, sql), static k => Build(k.Item, k.Sql));

    private static BatchPlan? Build(Type itemType, string sql)
    {
        if (sql.Contains("{=", StringComparison.Ordinal))
        {
            return null;
        }

        // Dapper binds the public readable properties named in the text, matched case-insensitively.
        var members = new Dictionary<string, PropertyInfo>(StringComparer.OrdinalIgnoreCase);
        foreach (var property in itemType.GetProperties(BindingFlags.Instance | BindingFlags.Public))
        {
            if (property.GetGetMethod() is not null && property.GetIndexParameters().Length == 0)
            {
                members.TryAdd(property.Name, property);
            }
        }

        var positions = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        var parameters = new List<BatchParameter>();
        var bindable = true;
        var text = SqlPlaceholders.ToPositional(sql, name =>
        {
            if (positions.TryGetValue(name, out var known))
            {
                return known;
            }

            if (!members.TryGetValue(name, out var property))
            {
                return 0;
            }

            if (BatchParameter.For(itemType, property) is not { } parameter)
            {
                bindable = false;
                return 0;
            }

            parameters.Add(parameter);
            return positions[name] = parameters.Count;
        });
        return text is not null && bindable ? new BatchPlan(text, [.. parameters]) : null;
    }
}

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
            read = item => inner(item) is { } value ? Convert.ChangeType(value, valueType, System.Globalization.CultureInfo.InvariantCulture) : null;
        }

        // Dapper leaves DbType.Time unset (TimeSpan); no plain type here maps to it.
        return new BatchParameter(read, dbType);
    }
}

using System.Collections.Concurrent;
using System.Reflection;

namespace ShardKit;

/// <summary>One loaded property of <typeparamref name="T"/>: its column and its compiled writers, one per conversion in use.</summary>
internal sealed class BulkMember<T>
{
    private readonly ConcurrentDictionary<BulkConversion, BulkValueWriter<T>> _writers = new();
    private readonly MemberInfo _member;

    public BulkMember(MemberInfo member, string column)
    {
        _member = member;
        Column = column;
        var type = member is PropertyInfo p ? p.PropertyType : ((FieldInfo)member).FieldType;
        BareType = Nullable.GetUnderlyingType(type) ?? type;
    }

    /// <summary>The property's (or key field's) name, for messages.</summary>
    public string Property => _member.Name;

    /// <summary>The column it is loaded into.</summary>
    public string Column { get; }

    /// <summary>The property type without <see cref="Nullable{T}"/>.</summary>
    public Type BareType { get; }

    /// <summary>The writer for a column of PostgreSQL type <paramref name="typeName"/> (unqualified, e.g. <c>int4</c>).</summary>
    public BulkValueWriter<T> WriterFor(string typeName, out BulkConversion conversion)
    {
        conversion = ConversionFor(typeName);
        return _writers.GetOrAdd(conversion, static (c, m) => BulkWriterCompiler.Compile<T>(m, c), _member);
    }

    // Enums: the name into text columns, the value into integer ones, as they are otherwise (a mapped PostgreSQL enum).
    private BulkConversion ConversionFor(string typeName) => BareType switch
    {
        { IsEnum: true } => typeName switch
        {
            "text" or "varchar" or "bpchar" or "name" or "citext" => BulkConversion.EnumName,
            "int2" => BulkConversion.ToInt16,
            "int4" => BulkConversion.ToInt32,
            "int8" => BulkConversion.ToInt64,
            _ => BulkConversion.None,
        },
        _ when BareType == typeof(DateTimeOffset) => BulkConversion.ToUniversalTime,
        _ => BulkConversion.None,
    };
}

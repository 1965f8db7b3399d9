using System.Linq.Expressions;
using System.Reflection;
using Npgsql;

namespace ShardKit;

/// <summary>
/// Compiles a property's COPY writer: read the property, write null for null, else shape the value (see
/// <see cref="BulkConversion"/>) and call <see cref="NpgsqlBinaryImporter.WriteAsync{T}(T, string, CancellationToken)"/>
/// with the value's own type, so nothing is boxed.
/// </summary>
internal static class BulkWriterCompiler
{
    private static readonly MethodInfo WriteAsync = typeof(NpgsqlBinaryImporter).GetMethods()
        .Single(m => m.Name == nameof(NpgsqlBinaryImporter.WriteAsync) && m.IsGenericMethodDefinition
                     && m.GetParameters() is [_, { ParameterType: var p }, _] && p == typeof(string));

    private static readonly MethodInfo WriteNullAsync = typeof(NpgsqlBinaryImporter)
        .GetMethod(nameof(NpgsqlBinaryImporter.WriteNullAsync), [typeof(CancellationToken)])!;

    public static BulkValueWriter<T> Compile<T>(MemberInfo member, BulkConversion conversion)
    {
        var memberType = member is PropertyInfo p ? p.PropertyType : ((FieldInfo)member).FieldType;
        var importer = Expression.Parameter(typeof(NpgsqlBinaryImporter), "importer");
        var row = Expression.Parameter(typeof(T), "row");
        var dataTypeName = Expression.Parameter(typeof(string), "dataTypeName");
        var cancellation = Expression.Parameter(typeof(CancellationToken), "cancellationToken");
        var value = Expression.Variable(memberType, "value");

        Expression Write(Expression bare)
        {
            var shaped = Shape(bare, conversion);
            return Expression.Call(importer, WriteAsync.MakeGenericMethod(shaped.Type), shaped, dataTypeName, cancellation);
        }

        var writeNull = Expression.Call(importer, WriteNullAsync, cancellation);
        Expression body = Nullable.GetUnderlyingType(memberType) is not null
            ? Expression.Condition(Expression.Property(value, "HasValue"), Write(Expression.Property(value, "Value")), writeNull)
            : !memberType.IsValueType
                ? Expression.Condition(Expression.ReferenceEqual(value, Expression.Constant(null)), writeNull, Write(value))
                : Write(value);
        var block = Expression.Block([value], Expression.Assign(value, Expression.MakeMemberAccess(row, member)), body);
        return Expression.Lambda<BulkValueWriter<T>>(block, importer, row, dataTypeName, cancellation).Compile();
    }

    private static Expression Shape(Expression value, BulkConversion conversion) => conversion switch
    {
        BulkConversion.EnumName => Expression.Call(typeof(EnumNames<>).MakeGenericType(value.Type).GetMethod("Of")!, value),
        BulkConversion.ToInt16 => Expression.ConvertChecked(Expression.Convert(value, Enum.GetUnderlyingType(value.Type)), typeof(short)),
        BulkConversion.ToInt32 => Expression.ConvertChecked(Expression.Convert(value, Enum.GetUnderlyingType(value.Type)), typeof(int)),
        BulkConversion.ToInt64 => Expression.ConvertChecked(Expression.Convert(value, Enum.GetUnderlyingType(value.Type)), typeof(long)),
        BulkConversion.ToUniversalTime => Expression.Call(value, nameof(DateTimeOffset.ToUniversalTime), Type.EmptyTypes),
        _ => value,
    };
}

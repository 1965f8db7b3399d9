using System.Globalization;

namespace ShardKit;

/// <summary>Converts the values shards return (boxed, of the column's own type) into the type the caller asked for.</summary>
internal static class ScalarValues
{
    public static T To<T>(object value)
    {
        if (value is T typed)
        {
            return typed;
        }

        var target = Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T);
        try
        {
            return (T)(target.IsEnum
                ? Enum.ToObject(target, value)
                : Convert.ChangeType(value, target, CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is InvalidCastException or FormatException)
        {
            throw new InvalidCastException(
                $"A shard returned a {value.GetType().Name} that cannot be read as {typeof(T).Name}; ask for the column's type or cast it in SQL.", e);
        }
    }

    /// <summary>The non-null values of one column across the shards.</summary>
    public static IEnumerable<object> Column(IReadOnlyList<object?[]> rows, int column) =>
        rows.Select(r => r[column]).Where(v => v is not null)!;

    /// <summary>Adds exactly: integers in checked 64-bit, decimals as decimals, floating point as double.</summary>
    public static object? Sum(IEnumerable<object> values, Type target)
    {
        var any = false;
        if (target == typeof(double) || target == typeof(float))
        {
            var sum = 0d;
            foreach (var v in values)
            {
                (sum, any) = (sum + Convert.ToDouble(v, CultureInfo.InvariantCulture), true);
            }

            return any ? sum : null;
        }

        if (target == typeof(decimal))
        {
            var sum = 0m;
            foreach (var v in values)
            {
                (sum, any) = (sum + Convert.ToDecimal(v, CultureInfo.InvariantCulture), true);
            }

            return any ? sum : null;
        }

        var total = 0L;
        foreach (var v in values)
        {
            (total, any) = (checked(total + Convert.ToInt64(v, CultureInfo.InvariantCulture)), true);
        }

        return any ? total : null;
    }

    public static bool IsSummable(Type target) =>
        target == typeof(long) || target == typeof(int) || target == typeof(short) || target == typeof(decimal)
        || target == typeof(double) || target == typeof(float);
}

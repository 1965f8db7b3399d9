
namespace ShardKit;

public static partial class Merge
{
    /// <summary>
    /// A key that reads column <paramref name="name"/> of a dynamic row (from the non-generic <c>Query</c>), for the
    /// plans that take a key: <c>Merge.OrderByDescending(Merge.Column&lt;DateTime&gt;("created_at")).ThenBy(Merge.Column&lt;long&gt;("id"))</c>.
    /// The value is converted to <typeparamref name="TKey"/> (an <c>int</c> column reads as <c>long</c>); NULL reads as
    /// <c>default</c>, so ask for a nullable type when the column has NULLs. The name is the column's name as
    /// PostgreSQL returns it (unquoted names are lower case); a row without it is an error naming the columns it has.
    /// </summary>
    public static Func<dynamic, TKey> Column<TKey>(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return row => ReadColumn<TKey>((object)row, name);
    }

    private static TKey ReadColumn<TKey>(object row, string name)
    {
        if (row is not IDictionary<string, object?> columns)
        {
            throw new ShardKitException(
                $"Merge.Column(\"{name}\") reads dynamic rows (the non-generic Query), not {row?.GetType().Name ?? "null"}; " +
                "for typed rows pass a key selector: Merge.OrderBy<Order, DateTime>(o => o.CreatedAt).");
        }

        if (!columns.TryGetValue(name, out var value))
        {
            throw new ShardKitException(
                $"The merge orders by column '{name}' but the rows have the columns {string.Join(", ", columns.Keys)}; " +
                "name a column the query selects (PostgreSQL returns unquoted names in lower case).");
        }

        return value is null or DBNull ? default! : ScalarValues.To<TKey>(value);
    }
}


namespace ShardKit;

/// <summary>
/// The merge plans of multi-shard reads. Row merges (<see cref="MergePlan{T}"/>) go to
/// <see cref="FanOutScope.QueryAsync{T}(string, object?, MergePlan{T}?, int?, System.Data.CommandType?, CancellationToken)"/>
/// and friends; scalar merges (<see cref="ScalarMerge{T}"/>) to <c>ExecuteScalarAsync</c>.
/// </summary>
public static partial class Merge
{
    /// <summary>
    /// Every shard's rows, in the order they arrive: the default when no plan is given, and the way to say so on purpose
    /// for SQL that orders or limits per shard (without a plan such SQL is refused).
    /// </summary>
    public static MergePlan<T> Concat<T>() => MergePlan<T>.Concat;

    /// <summary>
    /// The first row any shard returns: the remaining shards are cancelled as soon as it arrives (a lookup by a column
    /// that is not the shard key).
    /// </summary>
    public static MergePlan<T> First<T>() => MergePlan<T>.FirstMatch();

    /// <summary>
    /// A streaming k-way merge by a key, ascending; each shard's SQL must <c>ORDER BY</c> the same key. Memory stays
    /// proportional to the number of shards. <paramref name="nullsFirst"/> matches NULLS FIRST (true) or NULLS LAST
    /// (false); null for PostgreSQL's default (NULLs last ascending, first descending).
    /// </summary>
    public static MergePlan<T> OrderBy<T, TKey>(Func<T, TKey> key, IComparer<TKey>? comparer = null, bool? nullsFirst = null) =>
        MergePlan<T>.Concat.OrderBy(key, comparer, nullsFirst);

    /// <summary>A streaming k-way merge by a key, descending; see <see cref="OrderBy{T, TKey}"/>.</summary>
    public static MergePlan<T> OrderByDescending<T, TKey>(Func<T, TKey> key, IComparer<TKey>? comparer = null, bool? nullsFirst = null) =>
        MergePlan<T>.Concat.OrderByDescending(key, comparer, nullsFirst);

    /// <summary>
    /// Combines the rows of a per-shard <c>GROUP BY</c> that share a key into one row per key:
    /// <paramref name="combine"/> receives the row so far and the next one (sum their sums and counts, keep the lower
    /// minimum, …). Every row is read first; add <c>OrderBy</c>/<c>Take</c> to sort and cut the combined groups.
    /// </summary>
    public static MergePlan<T> GroupBy<T, TKey>(Func<T, TKey> key, Func<T, T, T> combine, IEqualityComparer<TKey>? comparer = null)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(combine);
        return MergePlan<T>.Grouped(new RowGrouping<T, TKey>(key, combine, comparer));
    }

    /// <summary>Every shard's rows with duplicates dropped (SELECT DISTINCT across shards).</summary>
    public static MergePlan<T> Distinct<T>(IEqualityComparer<T>? comparer = null) => MergePlan<T>.Concat.Distinct(comparer);

    /// <summary>
    /// Adds the shards' values (per-shard <c>sum(…)</c> or <c>count(*)</c>). NULLs are skipped; when every shard
    /// returns NULL (or no shard has a row) the result is NULL for a nullable <typeparamref name="T"/>, else zero (as
    /// Dapper's ExecuteScalar reads NULL into a non-nullable type); ask for <c>long?</c> or <c>decimal?</c> to tell
    /// "no rows" from zero. Integers add in checked
    /// 64-bit arithmetic, so an overflow throws instead of wrapping.
    /// </summary>
    public static ScalarMerge<T> Sum<T>()
    {
        var target = Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T);
        if (!ScalarValues.IsSummable(target))
        {
            throw new ArgumentException(
                $"Sum adds integers, decimals and floating-point numbers, not {typeof(T).Name}; for other shapes use Merge.GroupBy.", nameof(T));
        }

        return new("sum", 1, rows => ScalarValues.Sum(ScalarValues.Column(rows, 0), target) is { } sum ? ScalarValues.To<T>(sum) : Zero<T>());
    }

    /// <summary>Adds per-shard <c>count(…)</c> results.</summary>
    public static ScalarMerge<long> Count() =>
        new("count", 1, rows => (long)(ScalarValues.Sum(ScalarValues.Column(rows, 0), typeof(long)) ?? 0L));

    /// <summary>
    /// The least of the shards' values, NULLs skipped; when every shard returns NULL (no rows), NULL for a nullable
    /// <typeparamref name="T"/>, else default (as Dapper reads NULL into a non-nullable type).
    /// </summary>
    public static ScalarMerge<T> Min<T>(IComparer<T>? comparer = null) => Extreme("min", comparer, sign: -1);

    /// <summary>The greatest of the shards' values, NULLs skipped; NULL or default as for <see cref="Min{T}"/>.</summary>
    public static ScalarMerge<T> Max<T>(IComparer<T>? comparer = null) => Extreme("max", comparer, sign: 1);

    /// <summary>
    /// The average over every shard's rows, exactly: each shard returns two columns, its sum and its count
    /// (<c>select sum(total), count(total) from orders</c>), and the average is the total sum over the total count.
    /// NULL when there are no rows. (An average of per-shard averages would be wrong when shards differ in size.) The
    /// digits are the ones PostgreSQL's <c>avg(numeric)</c> shows: at least 16 significant, rounded half away from zero.
    /// </summary>
    public static ScalarMerge<decimal?> Average() => new("avg", 2, rows =>
    {
        var count = (long)(ScalarValues.Sum(ScalarValues.Column(rows, 1), typeof(long)) ?? 0L);
        return count == 0 ? null : NumericAverage.Of((decimal)ScalarValues.Sum(ScalarValues.Column(rows, 0), typeof(decimal))!, count);
    });

    private static ScalarMerge<T> Extreme<T>(string kind, IComparer<T>? comparer, int sign)
    {
        var compare = comparer ?? PostgresOrder.For<T>() ?? Comparer<T>.Default;
        return new(kind, 1, rows =>
        {
            var any = false;
            T best = default!;
            foreach (var value in ScalarValues.Column(rows, 0))
            {
                var v = ScalarValues.To<T>(value);
                if (!any || (sign * compare.Compare(v, best)) > 0)
                {
                    (best, any) = (v, true);
                }
            }

            return best;
        });
    }

    private static T Zero<T>() => Nullable.GetUnderlyingType(typeof(T)) is null ? ScalarValues.To<T>(0) : default!;
}

using System.Runtime.CompilerServices;

namespace ShardKit;

/// <summary>
/// How the rows of a multi-shard read become one result, as if one database had answered. Start from
/// <see cref="Merge"/>; every method returns a new plan, so plans are immutable and can be kept in static fields.
/// Stages run in this order: merge the shards (arrival order, or an ordered k-way merge), combine groups,
/// drop duplicates, drop rows up to the keyset cursor, skip, take.
/// </summary>
public sealed partial class MergePlan<T>
{
    internal static readonly MergePlan<T> Concat = new("concat");

    private MergePlan(string kind) => Kind = kind;

    /// <summary>The merge as telemetry names it: concat, ordered, first, grouped.</summary>
    public string Kind { get; private init; }

    /// <summary>The order the shards' rows are merged by; null for arrival order.</summary>
    internal IComparer<T>? Order { get; private init; }

    internal RowGrouping<T>? Grouping { get; private init; }

    internal IEqualityComparer<T>? DistinctComparer { get; private init; }

    internal bool HasCursor { get; private init; }

    internal T? Cursor { get; private init; }

    /// <summary>Rows discarded from the front of the merged result.</summary>
    public int SkipCount { get; private init; }

    /// <summary>The most rows returned; null for all.</summary>
    public int? TakeCount { get; private init; }

    /// <summary>
    /// The LIMIT each shard needs for this plan to be exact: skip + take (a shard may hold every one of the
    /// merged rows). Pass it to the SQL (<c>limit @ShardLimit</c>); null when the plan takes everything.
    /// </summary>
    public int? ShardLimit => TakeCount is { } take ? checked(SkipCount + take) : null;

    internal bool IsDistinct => DistinctComparer is not null;

    /// <summary>True when the plan only concatenates the shards' rows: no order, groups, duplicates, cursor, skip or take.</summary>
    internal bool IsConcatOnly => Order is null && Grouping is null && DistinctComparer is null && !HasCursor && SkipCount == 0 && TakeCount is null;

    internal static MergePlan<T> Ordered(IComparer<T> order) => new("ordered") { Order = order };

    internal static MergePlan<T> Grouped(RowGrouping<T> grouping) => new("grouped") { Grouping = grouping };

    internal static MergePlan<T> FirstMatch() => new("first") { TakeCount = 1 };

    /// <summary>Breaks ties of the order so far by another key, ascending (ORDER BY a, b); see <see cref="OrderBy{TKey}"/> for <paramref name="nullsFirst"/>.</summary>
    public MergePlan<T> ThenBy<TKey>(Func<T, TKey> key, IComparer<TKey>? comparer = null, bool? nullsFirst = null) =>
        Then(key, comparer, descending: false, nullsFirst);

    /// <summary>Breaks ties of the order so far by another key, descending (ORDER BY a, b DESC); see <see cref="OrderBy{TKey}"/> for <paramref name="nullsFirst"/>.</summary>
    public MergePlan<T> ThenByDescending<TKey>(Func<T, TKey> key, IComparer<TKey>? comparer = null, bool? nullsFirst = null) =>
        Then(key, comparer, descending: true, nullsFirst);

    /// <summary>
    /// Orders the result by a key, ascending. On a grouped plan this sorts the combined groups; otherwise it makes
    /// the merge a k-way merge, and each shard's query must return its rows in this order. <paramref name="nullsFirst"/>
    /// matches the query's NULLS FIRST (true) or NULLS LAST (false); null for PostgreSQL's default (NULLs last
    /// ascending, first descending).
    /// </summary>
    public MergePlan<T> OrderBy<TKey>(Func<T, TKey> key, IComparer<TKey>? comparer = null, bool? nullsFirst = null) =>
        By(key, comparer, descending: false, nullsFirst);

    /// <summary>Orders the result by a key, descending; see <see cref="OrderBy{TKey}"/>.</summary>
    public MergePlan<T> OrderByDescending<TKey>(Func<T, TKey> key, IComparer<TKey>? comparer = null, bool? nullsFirst = null) =>
        By(key, comparer, descending: true, nullsFirst);

    /// <summary>Discards the first <paramref name="count"/> merged rows (each shard must return skip + take rows).</summary>
    public MergePlan<T> Skip(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        // Skip after Take skips within the taken rows, as LINQ does: Take(10).Skip(5) leaves 5 rows.
        return With(p => (p.SkipCount, p.TakeCount) = (checked(SkipCount + count), TakeCount is { } take ? Math.Max(0, take - count) : null));
    }

    /// <summary>Returns at most <paramref name="count"/> rows, and stops (cancelling the shards' queries) once it has them.</summary>
    public MergePlan<T> Take(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        return With(p => p.TakeCount = TakeCount is { } take ? Math.Min(take, count) : count);
    }

    /// <summary>
    /// Keyset pagination: only rows strictly after <paramref name="lastRow"/> in the plan's order. The recommended way
    /// to page deeply: each shard filters with the same cursor in SQL (<c>where (created_at, id) &lt; (@At, @Id)</c>)
    /// and returns only a page, instead of skip + take rows that grow with every page.
    /// </summary>
    public MergePlan<T> After(T lastRow)
    {
        if (Order is null)
        {
            throw new InvalidOperationException("After(row) needs an ordered plan: start from Merge.OrderBy(...) so there is an order to continue.");
        }

        return With(p => (p.HasCursor, p.Cursor) = (true, lastRow));
    }

    /// <summary>
    /// Drops rows equal to an earlier row (memory grows with the number of distinct rows). By default rows are equal
    /// when their mapped values are: a record's or struct's own equality, or else every public property and field.
    /// </summary>
    public MergePlan<T> Distinct(IEqualityComparer<T>? comparer = null) => With(p => p.DistinctComparer = comparer ?? RowEquality<T>.Default);

    /// <summary>Runs the plan over the shards' row streams.</summary>
    internal IAsyncEnumerable<ShardRow<T>> MergeAsync(MergeSource<T>[] sources, CancellationToken cancellationToken = default)
    {
        if (Grouping is not null)
        {
            return StagedAsync(GroupedAsync(sources, cancellationToken), cancellationToken);
        }

        IMergeCursor<T> merge = Order is null ? new ArrivalMerge<T>(sources, cancellationToken) : new OrderedMerge<T>(sources, Order);
        return new StagedRows(this, merge, cancellationToken);
    }

    private async IAsyncEnumerable<ShardRow<T>> StagedAsync(IAsyncEnumerable<ShardRow<T>> rows,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var stages = new Stages(this);
        if (stages.Done)
        {
            yield break;
        }

        await foreach (var row in rows.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            if (stages.Admit(row.Row))
            {
                yield return row;
                if (stages.Done)
                {
                    yield break;
                }
            }
        }
    }

    private async IAsyncEnumerable<ShardRow<T>> GroupedAsync(MergeSource<T>[] sources,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var arrival = new StagedRows(Concat, new ArrivalMerge<T>(sources, cancellationToken), cancellationToken);
        var groups = await Grouping!.CombineAsync(arrival, cancellationToken).ConfigureAwait(false);
        IEnumerable<ShardRow<T>> result = groups;
        if (Order is not null)
        {
            var order = Order;
            result = groups.Order(Comparer<ShardRow<T>>.Create((a, b) => order.Compare(a.Row, b.Row))); // stable
        }

        foreach (var row in result)
        {
            yield return row;
        }
    }

    private MergePlan<T> By<TKey>(Func<T, TKey> key, IComparer<TKey>? comparer, bool descending, bool? nullsFirst)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (Order is not null)
        {
            throw new InvalidOperationException("The plan is already ordered; add further keys with ThenBy or ThenByDescending.");
        }

        var order = new MergeKeyComparer<T, TKey>(key, comparer, descending, nullsFirst);
        return With(p => (p.Order, p.Kind) = (order, Grouping is null ? "ordered" : Kind));
    }

    private MergePlan<T> Then<TKey>(Func<T, TKey> key, IComparer<TKey>? comparer, bool descending, bool? nullsFirst)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (Order is null)
        {
            throw new InvalidOperationException("ThenBy needs an order to break ties of; start with OrderBy or OrderByDescending.");
        }

        var then = new ThenComparer<T>(Order, new MergeKeyComparer<T, TKey>(key, comparer, descending, nullsFirst));
        return With(p => p.Order = then);
    }

    private MergePlan<T> With(Action<Builder> change)
    {
        var builder = new Builder(this);
        change(builder);
        return builder.Build();
    }

    /// <summary>The stages after the merge (distinct, cursor, skip, take) for one run of the plan.</summary>
    private sealed class Stages(MergePlan<T> plan)
    {
        private readonly HashSet<T>? _seen = plan.DistinctComparer is null ? null : new HashSet<T>(plan.DistinctComparer);
        private int _skipped;

        public int Taken { get; private set; }

        /// <summary>True once the plan's Take is satisfied: stop reading (and so cancel the shards).</summary>
        public bool Done => Taken == plan.TakeCount;

        /// <summary>Whether the next merged row belongs in the result.</summary>
        public bool Admit(T row)
        {
            if ((plan.HasCursor && plan.Order!.Compare(row, plan.Cursor) <= 0) || (_seen is not null && !_seen.Add(row)))
            {
                return false;
            }

            if (_skipped < plan.SkipCount)
            {
                _skipped++;
                return false;
            }

            Taken++;
            return true;
        }
    }

    /// <summary>A mutable copy, so each method above changes one thing and the plan itself stays immutable.</summary>
    private sealed class Builder(MergePlan<T> from)
    {
        public string Kind = from.Kind;
        public IComparer<T>? Order = from.Order;
        public IEqualityComparer<T>? DistinctComparer = from.DistinctComparer;
        public bool HasCursor = from.HasCursor;
        public T? Cursor = from.Cursor;
        public int SkipCount = from.SkipCount;
        public int? TakeCount = from.TakeCount;

        public MergePlan<T> Build() => new(Kind)
        {
            Order = Order,
            Grouping = from.Grouping,
            DistinctComparer = DistinctComparer,
            HasCursor = HasCursor,
            Cursor = Cursor,
            SkipCount = SkipCount,
            TakeCount = TakeCount,
        };
    }
}

namespace ShardKit;

/// <summary>
/// A write sent to several shards (<see cref="FanOutScope.ExecuteAsync"/>, <see cref="ShardedConnection.ExecuteBatchAsync{T}"/>)
/// failed on some of them. Besides the failed shards it says what each targeted shard kept: <see cref="AffectedRows"/>
/// for the shards where the write applied (committed), <see cref="NotAppliedShards"/> for those that kept nothing (the
/// server refused it, it was rolled back, or it never ran there), and <see cref="InDoubtShards"/> for those that were
/// sent the write (or its commit) but never answered: check them before writing again.
/// </summary>
public sealed class BroadcastWriteException : ShardAggregateException
{
    /// <summary>Creates an exception with no message.</summary>
    public BroadcastWriteException()
    {
    }

    /// <summary>Creates an exception with a message that says what to do.</summary>
    public BroadcastWriteException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public BroadcastWriteException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    internal BroadcastWriteException(string message, IReadOnlyList<ShardFailure> failures, IReadOnlyDictionary<string, int> affectedRows,
        IReadOnlyList<string> notApplied, IReadOnlyList<string> inDoubt)
        : base(message, failures)
    {
        AffectedRows = affectedRows;
        NotAppliedShards = notApplied;
        InDoubtShards = inDoubt;
    }

    /// <summary>The shards where the write applied (and committed), with the rows it affected on each.</summary>
    public IReadOnlyDictionary<string, int> AffectedRows { get; } = new Dictionary<string, int>();

    /// <summary>
    /// A routed write split over shards that returns rows (<c>… returning</c> through <c>Query</c>): each part's rows by
    /// the part's index in its route, null for a part that failed; null when the command returns no rows. ShardKit runs
    /// a part a shard refused (its buckets moved) again and hands the caller every part's rows.
    /// </summary>
    internal object?[]? PartResults { get; set; }

    /// <summary>The names of the shards where the write applied; the keys of <see cref="AffectedRows"/> in shard order.</summary>
    public IReadOnlyList<string> AppliedShards => [.. AffectedRows.Keys];

    /// <summary>Shards that kept nothing of the write: the server refused or rolled it back, or it never ran there.</summary>
    public IReadOnlyList<string> NotAppliedShards { get; } = [];

    /// <summary>
    /// Shards that were sent the write (or its commit) but never answered (a lost connection, a timeout): it may or may
    /// not have applied there; check them before writing again.
    /// </summary>
    public IReadOnlyList<string> InDoubtShards { get; } = [];

    /// <summary>The exception with a message that lists the failures, then what each shard kept.</summary>
    /// <param name="operation">The operation's name, as in telemetry.</param>
    /// <param name="failures">The failed shards.</param>
    /// <param name="rows">The shards where the write applied, with their rows.</param>
    /// <param name="notApplied">Shards that kept nothing.</param>
    /// <param name="inDoubt">Shards whose outcome is unknown.</param>
    /// <param name="committed">The write ran in a transaction per shard: say committed / rolled back.</param>
    /// <param name="atomic">A shard in doubt was sent the whole write (else it may be partly written).</param>
    internal static BroadcastWriteException Create(string operation, IReadOnlyList<ShardFailure> failures, IReadOnlyDictionary<string, int> rows,
        IReadOnlyList<string> notApplied, IReadOnlyList<string> inDoubt, bool committed, bool atomic)
    {
        var (applied, notAppliedWord) = committed ? ("Committed on", "rolled back on") : ("Applied on", "not applied on");
        var doubt = atomic ? "sent but never answered" : "partly written";
        var message = $"{operation} failed on {failures.Count} shard(s): " +
            string.Join("; ", failures.Select(f => $"{f.Shard}: {f.Error.Message.TrimEnd('.', ' ', '\n')}")) + ". " +
            $"{applied} {List(rows.Select(r => $"{r.Key} ({r.Value} row{(r.Value == 1 ? "" : "s")})"))}; " +
            $"{notAppliedWord} {List(notApplied)}; in doubt ({doubt}; check them before writing again): {List(inDoubt)}.";
        return new BroadcastWriteException(message, failures, rows, notApplied, inDoubt);

        static string List(IEnumerable<string> items) => items.Any() ? string.Join(", ", items) : "none";
    }
}

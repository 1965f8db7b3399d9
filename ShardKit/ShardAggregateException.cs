namespace ShardKit;

/// <summary>
/// A multi-shard operation failed on one or more shards. <see cref="Failures"/> names each failed shard with its
/// error; <see cref="AggregateException"/>-style inner exceptions are in <see cref="InnerExceptions"/>. A write to several
/// shards throws the subclass <see cref="BroadcastWriteException"/>, which also says what each shard kept.
/// </summary>
public class ShardAggregateException : ShardKitException
{
    /// <summary>Creates an exception for the given shard failures.</summary>
    public ShardAggregateException(IReadOnlyList<ShardFailure> failures)
        : base(Format(failures), failures.Count > 0 ? failures[0].Error : null) => Failures = failures;

    /// <summary>Creates an exception for the given shard failures of a write that applied on other shards.</summary>
    internal ShardAggregateException(IReadOnlyList<ShardFailure> failures, IReadOnlyDictionary<string, int> affectedRows)
        : base(Format(failures) + Applied(affectedRows), failures.Count > 0 ? failures[0].Error : null)
    {
        Failures = failures;
        AffectedRows = affectedRows;
    }

    /// <summary>Creates an exception with a message and no shard failures.</summary>
    public ShardAggregateException(string message)
        : base(message) => Failures = [];

    /// <summary>Creates an exception with a message and a cause.</summary>
    public ShardAggregateException(string message, Exception? innerException)
        : base(message, innerException) => Failures = [];

    private protected ShardAggregateException(string message, IReadOnlyList<ShardFailure> failures)
        : base(message, failures.Count > 0 ? failures[0].Error : null) => Failures = failures;

    /// <summary>Creates an exception with no message.</summary>
    public ShardAggregateException()
        : this([])
    {
    }

    /// <summary>Each failed shard with its error, in shard order.</summary>
    public IReadOnlyList<ShardFailure> Failures { get; }

    /// <summary>
    /// For a routed write split over several shards (a key array): the rows affected on each shard where the statement
    /// succeeded, by shard name. Outside a transaction those changes are committed; the failed shards applied nothing.
    /// Empty for reads and for operations that apply nothing unless every shard succeeds.
    /// </summary>
    public IReadOnlyDictionary<string, int> AffectedRows { get; } = new Dictionary<string, int>();

    /// <summary>The errors of the failed shards.</summary>
    public IReadOnlyList<Exception> InnerExceptions => Failures.Select(f => f.Error).ToArray();

    /// <summary>The names of the failed shards.</summary>
    public IReadOnlyList<string> FailedShards => Failures.Select(f => f.Shard).ToArray();

    private static string Applied(IReadOnlyDictionary<string, int> affectedRows) =>
        affectedRows.Count == 0
            ? " The statement applied on no other shard."
            : " The statement applied on " + string.Join(", ", affectedRows.Select(a => $"{a.Key} ({a.Value} rows)")) +
              "; outside a transaction those changes stay.";

    private static string Format(IReadOnlyList<ShardFailure> failures) =>
        failures.Count == 0
            ? "A multi-shard operation failed."
            : $"{failures.Count} shard(s) failed: " + string.Join("; ", failures.Select(f => $"{f.Shard}: {f.Error.Message}"));
}

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

    /// <summary>The errors of the failed shards.</summary>
    public IReadOnlyList<Exception> InnerExceptions => Failures.Select(f => f.Error).ToArray();

    /// <summary>The names of the failed shards.</summary>
    public IReadOnlyList<string> FailedShards => Failures.Select(f => f.Shard).ToArray();

    private static string Format(IReadOnlyList<ShardFailure> failures) =>
        failures.Count == 0
            ? "A multi-shard operation failed."
            : $"{failures.Count} shard(s) failed: " + string.Join("; ", failures.Select(f => $"{f.Shard}: {f.Error.Message}"));
}

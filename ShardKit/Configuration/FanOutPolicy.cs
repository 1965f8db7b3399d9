namespace ShardKit;

/// <summary>What a fan-out does when some shards fail.</summary>
public enum FanOutPolicy
{
    /// <summary>All or nothing: the first failure cancels the other shards and throws <see cref="ShardAggregateException"/>.</summary>
    CompleteResults = 0,

    /// <summary>
    /// Rows of the shards that answered, with the failed shards listed in the result; throws only when every shard failed.
    /// </summary>
    PartialResults,
}

namespace ShardKit;

/// <summary>
/// A merge of shard streams read row by row without an async iterator: a row already buffered by its shard comes back
/// as a completed <see cref="ValueTask{TResult}"/>, so the per-row path has no asynchronous state machine.
/// </summary>
internal interface IMergeCursor<T>
{
    ShardRow<T> Current { get; }

    ValueTask<bool> MoveNextAsync();
}

namespace ShardKit;

/// <summary>
/// One shard's rows as the merge reads them. A shard that failed under the partial-results policy simply ends (its
/// failure is recorded in the run); under complete results the failure propagates.
/// </summary>
internal readonly record struct MergeSource<T>(string Shard, IAsyncEnumerator<T> Rows)
{
    /// <summary>Moves to the next row; false when the shard has no more.</summary>
    public ValueTask<bool> AdvanceAsync() => Rows.MoveNextAsync();
}

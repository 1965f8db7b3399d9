namespace ShardKit;

/// <summary>One shard's rows as the merge reads them.</summary>
internal readonly record struct MergeSource<T>(string Shard, IAsyncEnumerator<T> Rows)
{
    /// <summary>
    /// Moves to the next row. A shard that failed under the partial-results policy simply ends here (its failure is
    /// recorded in the run); under complete results the failure propagates.
    /// </summary>
    public ValueTask<bool> AdvanceAsync()
    {
        var next = Rows.MoveNextAsync();
        return next.IsCompletedSuccessfully ? next : AwaitAsync(next);
    }

    private static async ValueTask<bool> AwaitAsync(ValueTask<bool> next)
    {
        try
        {
            return await next.ConfigureAwait(false);
        }
        catch (ShardRowStream<T>.EndOfShard)
        {
            return false;
        }
    }
}

namespace ShardKit;

/// <summary>Opens once every shard's group has run, so no shard commits while another can still fail.</summary>
internal sealed class CommitBarrier(int parties)
{
    private readonly TaskCompletionSource _open = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _arrived;

    public async Task ArriveAndWaitAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Increment(ref _arrived) == parties)
        {
            _open.TrySetResult();
            return;
        }

        try
        {
            await _open.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_open.Task.IsCompleted)
        {
            // Open means every group ran. The wake-up runs on the thread pool, so a shard whose commit failed right after
            // the opening may cancel the token before this shard sees it open: this shard commits all the same, as the
            // others do (rolling it back would make the batch neither all nor none, and the report wrong).
        }
    }
}

namespace ShardKit;

/// <summary>Opens once every shard's group has run, so no shard commits while another can still fail.</summary>
internal sealed class CommitBarrier(int parties)
{
    private readonly TaskCompletionSource _open = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _arrived;

    public Task ArriveAndWaitAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Increment(ref _arrived) == parties)
        {
            _open.TrySetResult();
        }

        return _open.Task.WaitAsync(cancellationToken);
    }
}

namespace ShardKit;

/// <summary>Background renewal and release of the worker lease.</summary>
public sealed partial class ShardIdGenerator
{
    /// <summary>Stops renewing and frees the worker number at once, recording the last millisecond stamped.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!BeginDispose())
        {
            return;
        }

        await _renewTimer.DisposeAsync().ConfigureAwait(false);
        try
        {
            await BackgroundRenewal.ConfigureAwait(false);
            await _table.ReleaseAsync(Worker, _owner, StopIssuing(), CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (ShardErrors.FromShard(e))
        {
            // The lease then simply runs out; nothing is unsafe about that.
            ShardKitLog.IdLeaseReleaseFailed(_logger, Worker, _table.Name, e);
        }
    }

    /// <summary>Stops renewing and frees the worker number at once, recording the last millisecond stamped.</summary>
    public void Dispose()
    {
        if (!BeginDispose())
        {
            return;
        }

        _renewTimer.Dispose();
        try
        {
            // A renewal still running would otherwise find the worker released and report it lost.
            BackgroundRenewal.GetAwaiter().GetResult();
            _table.Release(Worker, _owner, StopIssuing());
        }
        catch (Exception e) when (ShardErrors.FromShard(e))
        {
            ShardKitLog.IdLeaseReleaseFailed(_logger, Worker, _table.Name, e);
        }
    }

    private bool BeginDispose() => Interlocked.Exchange(ref _disposed, 1) == 0;

    // No id is stamped after this; the next holder of the worker starts after the highest one issued.
    private long StopIssuing()
    {
        _sequencer.LeaseEnd = long.MinValue;
        return _sequencer.HighestIssued();
    }

    private void RenewInBackground()
    {
        if (Volatile.Read(ref _disposed) != 0 || !BackgroundRenewal.IsCompleted)
        {
            return;
        }

        Volatile.Write(ref _backgroundRenewal, RenewQuietlyAsync());
    }

    private async Task RenewQuietlyAsync()
    {
        try
        {
            await RenewLeaseAsync().ConfigureAwait(false);
        }
        catch (ShardIdLeaseException)
        {
            // Already logged as lost; NextId reports it once the current lease runs out.
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is ObjectDisposedException)
        {
            ShardKitLog.IdLeaseRenewalFailed(_logger, Worker, _table.Name, LeaseExpiresAt, e);
        }
    }
}

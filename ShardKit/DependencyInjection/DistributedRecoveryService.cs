using Microsoft.Extensions.Hosting;

namespace ShardKit;

/// <summary>
/// Runs <see cref="ShardedDataSource.RecoverAsync"/> every interval on the data source's clock: from host start when
/// asked to, otherwise from the moment this process first begins a distributed transaction, so an app that never uses
/// them sends nothing to its shards. A failed run is logged and tried again at the next tick; it never stops the host.
/// </summary>
internal sealed class DistributedRecoveryService(ShardedDataSource dataSource, TimeSpan interval, bool runAtStart) : BackgroundService
{
    /// <summary>Completed runs, for tests.</summary>
    internal int Runs => Volatile.Read(ref _runs);

    private int _runs;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!runAtStart)
        {
            await dataSource.Distributed.InUse.WaitAsync(stoppingToken).ConfigureAwait(false);
        }

        using var timer = new PeriodicTimer(interval, dataSource.Settings.Time);
        do
        {
            try
            {
                await dataSource.RecoverAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                ShardKitLog.RecoveryServiceFailed(dataSource.Logger, e);
            }

            Interlocked.Increment(ref _runs);
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }
}

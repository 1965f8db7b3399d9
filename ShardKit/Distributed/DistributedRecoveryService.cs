using Microsoft.Extensions.Hosting;

namespace ShardKit;

/// <summary>
/// Runs <see cref="ShardedDataSource.RecoverAsync"/> at start and then every interval on the data source's clock. A
/// failed run is logged and tried again at the next tick; the service never stops the host.
/// </summary>
internal sealed class DistributedRecoveryService(ShardedDataSource dataSource, TimeSpan interval) : BackgroundService
{
    /// <summary>Completed runs, for tests.</summary>
    internal int Runs => Volatile.Read(ref _runs);

    private int _runs;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
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

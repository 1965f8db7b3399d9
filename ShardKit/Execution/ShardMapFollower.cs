using Npgsql;

namespace ShardKit;

/// <summary>
/// Keeps a data source's map in step with the stored map on the catalog shard: reads it when the data source is
/// built, listens on <c>shardkit_map</c> on one dedicated connection, reads it again on every notification and every
/// <see cref="StoredMapOptions.CheckInterval"/>, and keeps the last good map while the catalog cannot be read. A write a
/// shard refused because its bucket moved waits here (<see cref="WaitForNewerMapAsync"/>) for the map that moved it.
/// </summary>
internal sealed class ShardMapFollower : IAsyncDisposable
{
    private readonly ShardSet _shards;
    private readonly StoredMapOptions _options;
    private readonly int _catalog;
    private readonly CancellationTokenSource _stopping = new();
    private readonly SemaphoreSlim _reading = new(1, 1);
    private readonly object _sharedGate = new();
    private Task _listening = Task.CompletedTask;
    private Task? _sharedRead;
    private TaskCompletionSource _adopted = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // How often a write waiting for a newer map reads the catalog itself, in case the notification does not come.
    private static readonly TimeSpan WaitReadInterval = TimeSpan.FromMilliseconds(50);

    public ShardMapFollower(ShardSet shards, StoredMapOptions options)
    {
        _shards = shards;
        _options = options;
        _catalog = shards.Map.IndexOf(options.CatalogShard);
    }

    private string CatalogName => _shards.NameOf(_catalog);

    /// <summary>Reads the map once, synchronously (the data source is being built), then follows it in the background.</summary>
    public void Start()
    {
        try
        {
            using var connection = _shards.DataSourceAt(_catalog).OpenConnection();
            Adopt(StoredMapCatalog.ReadAsync(connection, async: false, CancellationToken.None).GetAwaiter().GetResult());
        }
        catch (Exception e) when (ShardErrors.FromShard(e))
        {
            throw new ShardConnectionException(CatalogName,
                $"The stored shard map could not be read from shard '{CatalogName}' ({e.GetType().Name}: " +
                $"{ConnectionStrings.Redact(e.Message, _shards.ShardAt(_catalog).ConnectionString)}); the data source cannot " +
                "route before it has a map. Check that shard, or remove UseStoredMap.", e);
        }

        _listening = Task.Run(() => ListenAsync(_stopping.Token));
    }

    /// <summary>How often the catalog is read without a notification.</summary>
    public TimeSpan CheckInterval => _options.CheckInterval;

    /// <summary>Reads the stored map now (one read at a time; a caller arriving during a read waits for that read).</summary>
    public async Task RefreshAsync(CancellationToken cancellationToken)
    {
        var epoch = _shards.Map.Epoch;
        await _reading.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_shards.Map.Epoch != epoch)
            {
                return; // someone else's read just brought a newer map
            }

            var connection = await _shards.DataSourceAt(_catalog).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await using var _ = connection.ConfigureAwait(false);
            Adopt(await StoredMapCatalog.ReadAsync(connection, async: true, cancellationToken).ConfigureAwait(false));
        }
        finally
        {
            _reading.Release();
        }
    }

    /// <summary>
    /// Waits until the map is newer than <paramref name="epoch"/> (reading the catalog while waiting), at most
    /// <see cref="StoredMapOptions.MoveWait"/>: a shard refused a write routed by that epoch. False when no newer map came.
    /// </summary>
    public async Task<bool> WaitForNewerMapAsync(long epoch, CancellationToken cancellationToken)
    {
        var time = _shards.Settings.Time;
        var deadline = time.GetTimestamp() + (long)(_options.MoveWait.TotalSeconds * time.TimestampFrequency);
        while (_shards.Map.Epoch <= epoch)
        {
            // Taken before the read: a map adopted after it (by the listener, on the switch's notification) wakes us at
            // once, even while our own read of the catalog is still under way.
            var adopted = Volatile.Read(ref _adopted).Task;
            var left = TimeSpan.FromSeconds(Math.Max(0, deadline - time.GetTimestamp()) / (double)time.TimestampFrequency);
            try
            {
                await Task.WhenAny(adopted, SharedRefreshAsync()).WaitAsync(left, time, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                break; // MoveWait is over while the catalog read still hangs
            }

            if (_shards.Map.Epoch > epoch || time.GetTimestamp() >= deadline)
            {
                break;
            }

            // A source gives its bucket up a few milliseconds before the catalog names the new owner and notifies; the
            // listener reads that map and wakes every waiting write. Reading again now and then covers a lost notification.
            await Task.WhenAny(adopted, Task.Delay(WaitReadInterval, time, cancellationToken)).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
        }

        return _shards.Map.Epoch > epoch;
    }

    // A read of the catalog for waiting writes: one joins the read under way instead of queueing its own behind it
    // (many writes of a moved bucket wait at once). It never fails: a read that fails is logged, and the next one tries.
    private Task SharedRefreshAsync()
    {
        lock (_sharedGate)
        {
            if (_sharedRead is not { IsCompleted: false })
            {
                _sharedRead = Task.Run(async () =>
                {
                    try
                    {
                        await RefreshAsync(_stopping.Token).ConfigureAwait(false);
                    }
                    catch (Exception e) when (ShardErrors.FromShard(e) || e is OperationCanceledException or ObjectDisposedException)
                    {
                        if (!_stopping.IsCancellationRequested)
                        {
                            ShardKitLog.MapUnreadable(_shards.Logger, CatalogName, e.GetType().Name, _shards.Map.Epoch, e);
                        }
                    }
                }, CancellationToken.None);
            }

            return _sharedRead;
        }
    }

    private void Adopt(CatalogMap? stored)
    {
        if (stored is null || stored.Epoch <= _shards.Map.Epoch)
        {
            return; // not seeded yet (the configured spread, epoch 0, stays), or nothing newer
        }

        var map = StoredMapCatalog.Apply(_shards.Map, stored, out var problem);
        if (problem is not null)
        {
            ShardKitLog.MapUnusable(_shards.Logger, CatalogName, problem, _shards.Map.Epoch);
            return;
        }

        if (_shards.Replace(map))
        {
            ShardKitLog.MapLoaded(_shards.Logger, map.Epoch, CatalogName);
            Interlocked.Exchange(ref _adopted, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    // One connection listens; a notification or the check interval reads the map; a lost connection is opened again.
    private async Task ListenAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                var connection = await _shards.DataSourceAt(_catalog).OpenConnectionAsync(stopping).ConfigureAwait(false);
                await using var _ = connection.ConfigureAwait(false);
                var listen = new NpgsqlCommand("listen " + StoredMapCatalog.Channel, connection);
                await using (listen.ConfigureAwait(false))
                {
                    await listen.ExecuteNonQueryAsync(stopping).ConfigureAwait(false);
                }

                // A notification can arrive while the map is being read (after the read's snapshot): it must wake the
                // next wait at once, not be consumed by the read.
                var notified = 0;
                connection.Notification += (_, _) => Volatile.Write(ref notified, 1);
                while (!stopping.IsCancellationRequested)
                {
                    // Read after listening, so a switch between the two is not missed; then on each wake-up.
                    Volatile.Write(ref notified, 0);
                    Adopt(await StoredMapCatalog.ReadAsync(connection, async: true, stopping).ConfigureAwait(false));
                    if (Volatile.Read(ref notified) == 0)
                    {
                        await connection.WaitAsync(_options.CheckInterval, stopping).ConfigureAwait(false);
                    }
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (ShardErrors.FromShard(e))
            {
                ShardKitLog.MapUnreadable(_shards.Logger, CatalogName, e.GetType().Name, _shards.Map.Epoch, e);
                try
                {
                    // Try again soon: while the listener is away, notifications are lost and only checks remain.
                    var retry = _options.CheckInterval < TimeSpan.FromSeconds(1) ? _options.CheckInterval : TimeSpan.FromSeconds(1);
                    await Task.Delay(retry, _shards.Settings.Time, stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            await _listening.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // stopped
        }

        _stopping.Dispose();
        _reading.Dispose();
    }
}

using Microsoft.Extensions.Logging;

namespace ShardKit;

/// <summary>
/// Makes <see cref="ShardId"/> ids in the application with no round trip: each carries the bucket of its shard key, so
/// <see cref="ShardedConnection.ForId"/> finds the row's shard from the id alone. Unique across processes without
/// configuration: on creation it leases one of 32 worker numbers from a table on the first shard and renews the lease
/// in the background. Thread-safe and lock-free; an id allocates nothing. Create one per process and data source, and
/// dispose it at exit to free its worker number at once.
/// </summary>
public sealed partial class ShardIdGenerator : IAsyncDisposable, IDisposable
{
    private readonly ShardMap _map;
    private readonly HashShardingStrategy? _hash;
    private readonly IdSequencer _sequencer;
    private readonly WorkerLeaseTable _table;
    private readonly Guid _owner;
    private readonly ShardIdGeneratorOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ITimer _renewTimer;
    private Task _backgroundRenewal = Task.CompletedTask;
    private volatile bool _lost;
    private int _disposed;

    private ShardIdGenerator(ShardSet shards, WorkerLeaseTable table, Guid owner, int worker, long floor, long leaseEnd,
        ShardIdGeneratorOptions options)
    {
        _map = shards.Map;
        _hash = _map.Strategy as HashShardingStrategy;
        _table = table;
        _owner = owner;
        _options = options;
        _time = shards.Settings.Time;
        _logger = shards.Logger;
        _sequencer = new IdSequencer(worker, _hash?.Buckets.Count ?? _map.ShardNames.Count, floor, leaseEnd, _time,
            (long)options.MaxRunAhead.TotalMilliseconds, (long)options.MaxClockStepBack.TotalMilliseconds, LeaseEnded);
        _renewTimer = _time.CreateTimer(_ => RenewInBackground(), null, options.RenewInterval, options.RenewInterval);
    }

    /// <summary>The worker number this generator leased (0-31); it is in every id it makes.</summary>
    public int Worker => _sequencer.Worker;

    /// <summary>When the current lease ends; ids are never stamped later, and renewals push it forward.</summary>
    public DateTimeOffset LeaseExpiresAt => ShardId.Epoch.AddMilliseconds(_sequencer.LeaseEnd);

    /// <summary>
    /// Leases a worker number on the first shard of <paramref name="dataSource"/> (creating the worker table when
    /// missing) and returns a generator for that data source's map. Throws <see cref="ShardIdLeaseException"/> when all
    /// 32 worker numbers are taken.
    /// </summary>
    public static async Task<ShardIdGenerator> CreateAsync(ShardedDataSource dataSource, ShardIdGeneratorOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var shards = dataSource.Shards; // everything below works on the shard set
        options ??= new ShardIdGeneratorOptions();
        options.Validate();
        if (shards.Map.Buckets is null && shards.Count > BucketMap.MaxBuckets)
        {
            throw new ShardConfigurationException(
                $"Ids carry the shard index in 12 bits, but this {shards.Map.StrategyName} map has {shards.Count} shards; " +
                $"use at most {BucketMap.MaxBuckets}.");
        }

        var table = new WorkerLeaseTable(shards.DataSourceAt(0), options.WorkerTable);
        await table.EnsureAsync(cancellationToken).ConfigureAwait(false);

        var owner = Guid.NewGuid();
        var holder = options.Holder ?? $"{Environment.MachineName} pid {Environment.ProcessId}";
        var now = Milliseconds(shards.Settings.Time);
        var end = now + (long)options.LeaseDuration.TotalMilliseconds;
        var lease = await table.AcquireAsync(owner, holder, now, end, cancellationToken).ConfigureAwait(false)
            ?? throw new ShardIdLeaseException(
                $"All {ShardId.WorkerCount} worker numbers in {options.WorkerTable} on shard '{shards.Map.ShardNames[0]}' are leased. " +
                "Use one generator per process and dispose those you no longer need; leases of stopped processes free " +
                $"themselves {options.LeaseDuration.TotalSeconds:0} s after their last renewal.");

        var (worker, previousEnd) = lease;
        ShardKitLog.IdWorkerLeased(shards.Logger, worker, options.WorkerTable, holder);
        return new ShardIdGenerator(shards, table, owner, worker, Math.Max(previousEnd + 1, 0), end, options);
    }

    /// <summary>A new id for a row whose shard key is <paramref name="key"/>.</summary>
    public long NextId(ShardKeyValue key) => _sequencer.Next(_hash is not null ? _hash.BucketOf(key) : _map.Strategy.ShardOf(key));

    /// <summary>
    /// A new id for <paramref name="entity"/>, placed by its <c>[ShardKey]</c> property. (Named apart from
    /// <see cref="NextId(ShardKeyValue)"/> so that <c>NextId(42L)</c> never binds to an entity.)
    /// </summary>
    public long NextIdFor<T>(T entity) => NextId(ShardKeyAccessor<T>.Read(entity));

    /// <summary>
    /// A new id carrying <paramref name="bucket"/> (with strategies other than hash, a shard index); throws
    /// <see cref="ShardIdException"/> when it is outside the map.
    /// </summary>
    public long NextIdForBucket(int bucket) => _sequencer.Next(bucket);

    /// <summary>
    /// Renews the lease now (it is also renewed every <see cref="ShardIdGeneratorOptions.RenewInterval"/>). Throws
    /// <see cref="ShardIdLeaseException"/> when another process has taken the worker number over.
    /// </summary>
    public async Task RenewLeaseAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var end = Milliseconds(_time) + (long)_options.LeaseDuration.TotalMilliseconds;
        if (!await _table.RenewAsync(Worker, _owner, end, cancellationToken).ConfigureAwait(false))
        {
            _lost = true;
            ShardKitLog.IdLeaseLost(_logger, Worker, _table.Name);
            throw LeaseEnded(_sequencer.LeaseEnd);
        }

        // The table moved first: locally the lease never reaches further than the database says.
        _sequencer.LeaseEnd = Math.Max(_sequencer.LeaseEnd, end);
    }

    /// <summary>The background renewal in progress or last finished, for tests.</summary>
    internal Task BackgroundRenewal => Volatile.Read(ref _backgroundRenewal);

    internal IdSequencer Sequencer => _sequencer;

    private static long Milliseconds(TimeProvider time) => time.GetUtcNow().ToUnixTimeMilliseconds() - ShardId.EpochUnixMilliseconds;

    private Exception LeaseEnded(long leaseEnd)
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            return new ObjectDisposedException(nameof(ShardIdGenerator), "This generator was disposed and its worker released; create a new one.");
        }

        var end = ShardId.Epoch.AddMilliseconds(leaseEnd);
        return new ShardIdLeaseException(_lost
            ? $"Worker {Worker} was taken over by another process after its lease ended at {end:O}, so this generator " +
              "makes no more ids. Dispose it and create a new one; renewals failed before: check the connection to the " +
              $"first shard and that RenewInterval ({_options.RenewInterval}) is well below LeaseDuration."
            : $"Worker {Worker}'s lease ended at {end:O} and has not been renewed, so this generator stamps no later ids " +
              "(another process may take the worker over). Check the connection to the first shard; ids resume when " +
              "RenewLeaseAsync succeeds.");
    }
}

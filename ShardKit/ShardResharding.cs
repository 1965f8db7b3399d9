namespace ShardKit;

/// <summary>
/// Online resharding for a data source with a stored map (<see cref="ShardedDataSourceBuilder.UseStoredMap"/>): seed
/// the catalog and the shards' ownership fences, add a shard and give it an even share of buckets, move buckets while
/// the app keeps reading and writing, resume or cancel a move, audit placement. The same operations are the
/// <c>shardkit</c> tool's <c>map</c> and <c>move</c> commands. Get it from <see cref="ShardedDataSource.Resharding"/>.
/// </summary>
/// <remarks>
/// A move needs, on the source, ownership of the moved tables and the <c>REPLICATION</c> attribute (a publication and a
/// logical slot; no superuser), <c>wal_level=logical</c> and a free replication slot and WAL sender; on the target,
/// rights to insert and delete in the tables. Every app that writes must follow the stored map (or at least meet the
/// fence: it refuses writes to buckets a shard does not own, also from code that bypasses ShardKit).
/// </remarks>
public sealed class ShardResharding
{
    private readonly ReshardingAdmin _admin;
    private readonly ShardedDataSource _dataSource;

    internal ShardResharding(ShardedDataSource dataSource)
    {
        _dataSource = dataSource;
        _admin = new ReshardingAdmin(dataSource.Shards);
    }

    /// <summary>
    /// Writes the data source's current map to the catalog (when it holds none yet, at epoch 1) and installs the
    /// ownership fence on every shard for <paramref name="tables"/> (the tables whose rows move with their buckets). Run
    /// it once before the first move; running it again adds tables and keeps the stored map and ownership.
    /// </summary>
    /// <returns>The stored map's epoch.</returns>
    public Task<long> SeedAsync(IEnumerable<ShardedTable> tables, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tables);
        return _admin.SeedAsync(tables.ToArray(), cancellationToken);
    }

    /// <summary>
    /// Moves <paramref name="buckets"/> (all owned by one shard) to <paramref name="targetShard"/> online: a logical slot
    /// with an exported snapshot, a chunked binary copy, catch-up from the slot under a lag gate, a freeze of these buckets
    /// alone on the source, a drain and a verification, then the switch (source, target, catalog, notification) and the
    /// throttled removal of the source's copies. Each step is recorded in the catalog. Only the moving buckets' writers
    /// pause, for the freeze and switch (<see cref="MoveResult.Pause"/>). Cancelling <paramref name="cancellationToken"/> stops the move where it is; resume
    /// it with <see cref="ResumeMoveAsync"/> or undo it with <see cref="CancelMoveAsync"/>.
    /// </summary>
    /// <remarks>
    /// <paramref name="progress"/> is called on the mover's thread as it goes, one report at a time and in the order of
    /// the steps (rows copied never go back); keep it short, the move waits for it.
    /// </remarks>
    /// <exception cref="ShardMoveException">The move was refused, or stopped (it can be resumed by its id).</exception>
    public async Task<MoveResult> MoveBucketsAsync(IReadOnlyCollection<int> buckets, string targetShard, MoveOptions? options = null,
        IProgress<MoveProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(buckets);
        ArgumentException.ThrowIfNullOrWhiteSpace(targetShard);
        var mover = Mover(options, progress);
        await MigrateFirstAsync(options, cancellationToken).ConfigureAwait(false);
        return await mover.MoveAsync(buckets, targetShard, cancellationToken).ConfigureAwait(false);
    }

    // A target must have the source's schema before it receives rows: MoveOptions.Migrations brings every shard there.
    private async Task MigrateFirstAsync(MoveOptions? options, CancellationToken cancellationToken)
    {
        if (options?.Migrations is { } migrations)
        {
            await _dataSource.MigrateAsync(migrations, options.MigrationOptions, null, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Brings a configured but empty shard into the stored map: applies <see cref="MoveOptions.Migrations"/> (if given,
    /// on every shard, so the new one reaches the current version), fences it (it owns nothing yet), then moves an even
    /// share of buckets to it, taking from the shards that hold the most, one move per source shard, one after the other.
    /// </summary>
    /// <returns>The moves, in the order they ran.</returns>
    public async Task<IReadOnlyList<MoveResult>> AddShardAsync(string newShard, MoveOptions? options = null,
        IProgress<MoveProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(newShard);
        var shards = _admin.Shards;
        if (!shards.Map.Contains(newShard))
        {
            throw new ShardMoveException(null, $"There is no shard named '{newShard}'; add it to the configured shards of every app first " +
                $"(the shards are: {string.Join(", ", shards.Map.ShardNames)}).");
        }

        if (shards.Follower is { } follower)
        {
            await follower.RefreshAsync(cancellationToken).ConfigureAwait(false);
        }

        _ = Mover(options, progress); // options and stored map checked before anything runs
        await MigrateFirstAsync(options, cancellationToken).ConfigureAwait(false);
        var map = shards.Map;
        var target = map.IndexOf(newShard);
        var tables = await _admin.TablesAsync(cancellationToken).ConfigureAwait(false);
        await _admin.FenceAsync(target, [], map.Buckets!.Count, tables, cancellationToken).ConfigureAwait(false);
        var results = new List<MoveResult>();
        foreach (var (source, buckets) in ReshardingPlan.EvenShare(map, target))
        {
            results.Add(await Mover(options, progress).MoveAsync(buckets, newShard, cancellationToken)
                .ConfigureAwait(false));
        }

        return results;
    }

    /// <summary>Takes a stopped or crashed move up where the catalog says it is.</summary>
    public Task<MoveResult> ResumeMoveAsync(string moveId, MoveOptions? options = null, IProgress<MoveProgress>? progress = null,
        CancellationToken cancellationToken = default) => Mover(options, progress).ResumeAsync(moveId, cancellationToken);

    /// <summary>
    /// Cancels a move that has not switched: drops its slot and publication and deletes its copies on the target; the
    /// source keeps the buckets. A move that switched cannot be cancelled (resume it, then move the buckets back).
    /// </summary>
    public Task CancelMoveAsync(string moveId, CancellationToken cancellationToken = default) =>
        Mover(null, null).CancelAsync(moveId, cancellationToken);

    /// <summary>Every move the catalog records, oldest first.</summary>
    public Task<IReadOnlyList<MoveInfo>> GetMovesAsync(CancellationToken cancellationToken = default) =>
        Mover(null, null).ReadMovesAsync(null, cancellationToken);

    /// <summary>Per shard and table, the rows whose bucket the shard does not own; 0 everywhere when placement is right.</summary>
    public Task<IReadOnlyList<MisplacedRows>> AuditPlacementAsync(CancellationToken cancellationToken = default) =>
        _admin.AuditAsync(cancellationToken);

    /// <summary>Reads the stored map now instead of waiting for its notification.</summary>
    public Task RefreshMapAsync(CancellationToken cancellationToken = default) =>
        _admin.Shards.Follower?.RefreshAsync(cancellationToken) ?? Task.CompletedTask;

    internal BucketMover Mover(MoveOptions? options, IProgress<MoveProgress>? progress)
    {
        options ??= new MoveOptions();
        options.Validate();
        _ = _admin.CatalogIndex; // no stored map: say so before anything else
        return new BucketMover(_admin, options, progress);
    }
}

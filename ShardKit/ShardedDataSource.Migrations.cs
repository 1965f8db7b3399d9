namespace ShardKit;

/// <summary>Schema migrations across every shard.</summary>
public sealed partial class ShardedDataSource
{
    /// <summary>
    /// A migrator for <paramref name="migrations"/> on this data source's shards: <see cref="ShardMigrator.MigrateAsync"/>
    /// applies them (canary shard first, then the rest in parallel), <see cref="ShardMigrator.GetStatusAsync"/> reports drift.
    /// </summary>
    /// <exception cref="MigrationException">Two migrations share a version, or the options are invalid (the canary is not a shard).</exception>
    public ShardMigrator CreateMigrator(IEnumerable<Migration> migrations, MigrationOptions? options = null)
    {
        ObjectDisposedException.ThrowIf(Shards.IsDisposed, this);
        return new ShardMigrator(Shards, migrations, options);
    }

    /// <summary>Applies <paramref name="migrations"/> to every shard; see <see cref="ShardMigrator.MigrateAsync"/>.</summary>
    /// <example>
    /// <code>
    /// await shards.MigrateAsync(MigrationScripts.FromFolder("Migrations"));
    /// </code>
    /// </example>
    public Task<MigrationResult> MigrateAsync(IEnumerable<Migration> migrations, MigrationOptions? options = null,
        IProgress<MigrationProgress>? progress = null, CancellationToken cancellationToken = default) =>
        CreateMigrator(migrations, options).MigrateAsync(progress, cancellationToken);

    /// <summary>Each shard's migration state compared with <paramref name="migrations"/>; see <see cref="ShardMigrator.GetStatusAsync"/>.</summary>
    public Task<MigrationStatus> GetMigrationStatusAsync(IEnumerable<Migration> migrations, MigrationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        CreateMigrator(migrations, options).GetStatusAsync(cancellationToken);
}

using System.Collections.Concurrent;

namespace ShardKit;

/// <summary>
/// Applies a fixed list of migrations to every shard of a data source and reports each shard's state. Get one from
/// <see cref="ShardedDataSource.CreateMigrator"/>; thread-safe, and any number of processes may run it at once (a
/// per-shard advisory lock lets one migrate while the others wait).
/// </summary>
/// <example>
/// <code>
/// var migrator = shards.CreateMigrator(MigrationScripts.FromFolder("Migrations"));
/// await migrator.MigrateAsync(new Progress&lt;MigrationProgress&gt;(p => Console.WriteLine(p)));
/// var status = await migrator.GetStatusAsync();
/// </code>
/// </example>
public sealed class ShardMigrator
{
    private readonly ShardSet _shards;
    private readonly MigrationHistory _history;
    private readonly int _canary;

    internal ShardMigrator(ShardSet shards, IEnumerable<Migration> migrations, MigrationOptions? options)
    {
        _shards = shards;
        Options = options ?? new MigrationOptions();
        Options.Validate();
        Migrations = MigrationList.Ordered(migrations);
        _history = new MigrationHistory(Options);
        _canary = Options.CanaryShard is null ? 0
            : shards.Map.ShardNames.ToList().IndexOf(Options.CanaryShard) is var index and >= 0 ? index
            : throw new MigrationException($"MigrationOptions.CanaryShard '{Options.CanaryShard}' is not a shard; the shards are: " +
                                           string.Join(", ", shards.Map.ShardNames) + ".");
    }

    /// <summary>The scripts, in version order.</summary>
    public IReadOnlyList<Migration> Migrations { get; }

    /// <summary>The options in force.</summary>
    public MigrationOptions Options { get; }

    /// <summary>
    /// Brings every shard up to date. Takes every shard's migration lock first (the first shard's, then the others' in
    /// parallel) and reads the histories; refuses to start when a shard is unreachable or an applied script changed
    /// (<see cref="MigrationOptions.AllowChecksumDrift"/>). Then applies the pending scripts to the canary shard alone, and
    /// when they all succeeded, to the other shards in parallel (at most <see cref="MigrationOptions.MaxParallelism"/> at
    /// once); with <see cref="MigrationOptions.CanaryFirst"/> off, to every shard in parallel at once. Each transactional script commits on a
    /// shard together with its history row, or not at all; a run that failed somewhere converges when run again.
    /// </summary>
    /// <param name="progress">
    /// Receives each script's start, success or failure on each shard; after the canary, from several shards at once.
    /// </param>
    /// <param name="cancellationToken">Stops the run; a transactional script in flight rolls back on its shard.</param>
    /// <returns>What was applied on each shard.</returns>
    /// <exception cref="MigrationLockTimeoutException">Another process is migrating a shard; nothing was applied.</exception>
    /// <exception cref="MigrationException">
    /// A script failed (on the canary: no other shard was touched; after it: <see cref="MigrationException.Failures"/> lists
    /// each failed shard, the others completed), a shard was unreachable, or a script changed after it ran.
    /// </exception>
    public async Task<MigrationResult> MigrateAsync(IProgress<MigrationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var shards = _shards.Map.Shards;
        var sessions = new ShardMigrationSession?[shards.Count];
        try
        {
            // The first shard's lock before any other: every run over these shards queues there, so two runs never hold
            // locks the other waits for, and the other shards connect, lock and read their histories in parallel.
            sessions[0] = await OpenAsync(shards[0], cancellationToken).ConfigureAwait(false);
            await Task.WhenAll(shards.Skip(1).Select(async shard =>
                sessions[shard.Index] = await OpenAsync(shard, cancellationToken).ConfigureAwait(false))).ConfigureAwait(false);

            ThrowOnChecksumDrift(sessions!);
            var applied = new ConcurrentDictionary<string, IReadOnlyList<long>>();
            var canary = Options.CanaryFirst ? sessions[_canary]! : null;
            if (canary is not null)
            {
                applied[canary.Shard.Name] = await canary.ApplyAsync(Pending(canary), isCanary: true, progress, cancellationToken).ConfigureAwait(false);
            }

            var failures = new ConcurrentBag<ShardFailure>();
            var parallel = new ParallelOptions { MaxDegreeOfParallelism = Options.MaxParallelism, CancellationToken = cancellationToken };
            await Parallel.ForEachAsync(sessions.Where(s => s != canary), parallel, async (session, token) =>
            {
                try
                {
                    applied[session!.Shard.Name] = await session.ApplyAsync(Pending(session), isCanary: false, progress, token).ConfigureAwait(false);
                }
                catch (MigrationException e)
                {
                    failures.Add(new ShardFailure(session!.Shard.Name, e));
                }
            }).ConfigureAwait(false);

            if (!failures.IsEmpty)
            {
                throw Combined(failures.OrderBy(f => _shards.Map.IndexOf(f.Shard)).ToArray(), applied.Keys);
            }

            return new MigrationResult(canary?.Shard.Name, _shards.Map.ShardNames.ToDictionary(n => n, n => applied[n]));
        }
        finally
        {
            // Each release is a round trip: in parallel, so a run over many shards does not end with one per shard in turn.
            await Task.WhenAll(sessions.OfType<ShardMigrationSession>().Select(s => s.DisposeAsync().AsTask())).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Reads every shard's history (without the lock) and compares it with <see cref="Migrations"/>: applied version,
    /// pending scripts, checksum drift, shards behind others. A shard that cannot be read is reported, not thrown.
    /// </summary>
    public async Task<MigrationStatus> GetStatusAsync(CancellationToken cancellationToken = default)
    {
        var shards = await Task.WhenAll(_shards.Map.Shards.Select(shard => ReadStatusAsync(shard, cancellationToken))).ConfigureAwait(false);
        return new MigrationStatus(shards);
    }

    private async Task<ShardMigrationStatus> ReadStatusAsync(ShardInfo shard, CancellationToken cancellationToken)
    {
        try
        {
            var connection = await _shards.DataSourceAt(shard.Index).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                return new ShardMigrationStatus(shard.Name, await _history.ReadAsync(connection, cancellationToken).ConfigureAwait(false), Migrations);
            }
        }
        catch (Exception e) when (ShardErrors.FromShard(e))
        {
            return new ShardMigrationStatus(shard.Name, e.GetType().Name + ": " + ConnectionStrings.Redact(e.Message, shard.ConnectionString));
        }
    }

    private Task<ShardMigrationSession> OpenAsync(ShardInfo shard, CancellationToken cancellationToken) =>
        ShardMigrationSession.OpenAsync(_shards.DataSourceAt(shard.Index), shard, _history, Options, _shards.Logger, cancellationToken);

    private List<Migration> Pending(ShardMigrationSession session)
    {
        var applied = session.Applied.Select(a => a.Version).ToHashSet();
        return Migrations.Where(m => !applied.Contains(m.Version)).ToList();
    }

    private void ThrowOnChecksumDrift(ShardMigrationSession[] sessions)
    {
        if (Options.AllowChecksumDrift)
        {
            return;
        }

        var drift = sessions.SelectMany(s => new ShardMigrationStatus(s.Shard.Name, s.Applied, Migrations).ChecksumMismatches
            .Select(m => (Shard: s.Shard.Name, Migration: m))).ToArray();
        if (drift.Length > 0)
        {
            throw new MigrationException(
                "Scripts changed after they ran (their checksum differs from the history): " +
                string.Join(", ", drift.Select(d => $"{d.Migration} on {d.Shard}")) + ". Nothing was applied. Restore the original " +
                "text and put the change in a new script, or set MigrationOptions.AllowChecksumDrift if the edit changes nothing.")
            {
                Shard = drift[0].Shard,
                Version = drift[0].Migration.Version,
                Script = drift[0].Migration.ToString(),
            };
        }
    }

    private static MigrationException Combined(ShardFailure[] failures, IEnumerable<string> completed)
    {
        var first = (MigrationException)failures[0].Error;
        if (failures.Length == 1)
        {
            return new MigrationException(first.Message, first.InnerException)
            {
                Shard = first.Shard, Version = first.Version, Script = first.Script, SqlState = first.SqlState,
                Failures = failures, CompletedShards = completed.ToArray(),
            };
        }

        return new MigrationException($"Migration failed on {failures.Length} shards; the others completed. " +
                                      string.Join(" ", failures.Select(f => f.Error.Message)), first.InnerException)
        {
            Shard = first.Shard, Version = first.Version, Script = first.Script, SqlState = first.SqlState,
            Failures = failures, CompletedShards = completed.ToArray(),
        };
    }
}

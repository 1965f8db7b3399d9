using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace ShardKit;

/// <summary>
/// One shard's part of a migration run: a connection holding the shard's migration lock, the history read under it, and
/// the pending scripts applied in order, each all-or-nothing (transactional) or resumable (non-transactional).
/// </summary>
internal sealed class ShardMigrationSession : IAsyncDisposable
{
    private static readonly TimeSpan LockPollInterval = TimeSpan.FromMilliseconds(100);

    private readonly NpgsqlConnection _connection;
    private readonly MigrationHistory _history;
    private readonly MigrationOptions _options;
    private readonly ILogger _logger;

    private ShardMigrationSession(ShardInfo shard, NpgsqlConnection connection, MigrationHistory history, MigrationOptions options, ILogger logger)
    {
        _logger = logger;
        Shard = shard;
        _connection = connection;
        _history = history;
        _options = options;
    }

    public ShardInfo Shard { get; }

    public IReadOnlyList<AppliedMigration> Applied { get; private set; } = [];

    /// <summary>Connects, takes the shard's migration lock (waiting up to the lock timeout) and reads its history.</summary>
    public static async Task<ShardMigrationSession> OpenAsync(NpgsqlDataSource dataSource, ShardInfo shard, MigrationHistory history,
        MigrationOptions options, ILogger logger, CancellationToken cancellationToken)
    {
        NpgsqlConnection? connection = null;
        try
        {
            connection = await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            var session = new ShardMigrationSession(shard, connection, history, options, logger);
            await session.LockAsync(cancellationToken).ConfigureAwait(false);
            session.Applied = await history.ReadAsync(connection, cancellationToken).ConfigureAwait(false);
            return session;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            if (connection is not null)
            {
                await connection.DisposeAsync().ConfigureAwait(false); // a session lock ends with its connection
            }

            throw e as MigrationException ?? MigrationFailure.Create(shard, null, isCanary: false, e);
        }
    }

    /// <summary>Applies <paramref name="pending"/> in order; the versions applied. Stops at the first failure.</summary>
    public async Task<IReadOnlyList<long>> ApplyAsync(IReadOnlyList<Migration> pending, bool isCanary, IProgress<MigrationProgress>? progress,
        CancellationToken cancellationToken)
    {
        var applied = new List<long>();
        var historyReady = false;
        foreach (var migration in pending)
        {
            progress?.Report(new MigrationProgress(Shard.Name, migration, MigrationStage.Started, TimeSpan.Zero, isCanary));
            var started = Stopwatch.GetTimestamp();
            try
            {
                if (!historyReady)
                {
                    await _history.EnsureAsync(_connection, cancellationToken).ConfigureAwait(false);
                    historyReady = true;
                }

                if (migration.IsTransactional)
                {
                    await RunInTransactionAsync(migration, started, cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    await RunResumableAsync(migration, started, cancellationToken).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                progress?.Report(new MigrationProgress(Shard.Name, migration, MigrationStage.Failed, Stopwatch.GetElapsedTime(started), isCanary));
                var failure = MigrationFailure.Create(Shard, migration, isCanary, e);
                ShardKitLog.MigrationFailed(_logger, migration.ToString(), Shard.Name, failure.SqlState, failure);
                throw failure;
            }

            ShardKitLog.MigrationApplied(_logger, migration.ToString(), Shard.Name, (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            progress?.Report(new MigrationProgress(Shard.Name, migration, MigrationStage.Applied, Stopwatch.GetElapsedTime(started), isCanary));
            applied.Add(migration.Version);
        }

        return applied;
    }

    private async Task RunInTransactionAsync(Migration migration, long started, CancellationToken cancellationToken)
    {
        var transaction = await _connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await using (transaction.ConfigureAwait(false))
        {
            await ExecuteAsync(migration.Sql, cancellationToken).ConfigureAwait(false);
            await RecordAsync(migration, started, cancellationToken).ConfigureAwait(false);
            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    // A run that stopped halfway may have left an invalid index behind (a failed CREATE INDEX CONCURRENTLY keeps it, and
    // IF NOT EXISTS would then skip the build): drop those the script names, then run every statement again.
    private async Task RunResumableAsync(Migration migration, long started, CancellationToken cancellationToken)
    {
        var statements = MigrationSql.Statements(migration.Sql);
        var indexes = statements.Select(MigrationSql.ConcurrentIndexName).OfType<string>().ToArray();
        if (indexes.Length > 0)
        {
            foreach (var invalid in await InvalidIndexesAsync(indexes, cancellationToken).ConfigureAwait(false))
            {
                await ExecuteAsync($"drop index concurrently if exists {invalid}", cancellationToken).ConfigureAwait(false);
                ShardKitLog.InvalidIndexDropped(_logger, invalid, migration.ToString(), Shard.Name);
            }
        }

        foreach (var statement in statements)
        {
            await ExecuteAsync(statement, cancellationToken).ConfigureAwait(false);
        }

        await RecordAsync(migration, started, cancellationToken).ConfigureAwait(false);
    }

    private async Task<List<string>> InvalidIndexesAsync(string[] names, CancellationToken cancellationToken)
    {
        const string Sql = """
            select i.indexrelid::regclass::text
            from unnest($1::text[]) as n(name)
            join pg_index i on i.indexrelid = to_regclass(n.name)
            where not i.indisvalid
            """;
        var command = new NpgsqlCommand(Sql, _connection) { Parameters = { new() { Value = names } } };
        await using (command.ConfigureAwait(false))
        {
            var found = new List<string>();
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    found.Add(reader.GetString(0));
                }
            }

            return found;
        }
    }

    private async Task RecordAsync(Migration migration, long started, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(_history.InsertSql, _connection)
        {
            Parameters =
            {
                new() { Value = migration.Version },
                new() { Value = migration.Name },
                new() { Value = migration.Checksum },
                new() { Value = (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds },
                new() { Value = migration.IsTransactional },
            },
        };
        await using (command.ConfigureAwait(false))
        {
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task ExecuteAsync(string sql, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(sql, _connection) { CommandTimeout = (int)Math.Ceiling(_options.CommandTimeout.TotalSeconds) };
        await using (command.ConfigureAwait(false))
        {
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    // Polls pg_try_advisory_lock rather than waiting in pg_advisory_lock, so the wait is bounded and cancellable without
    // leaving a lock request queued on the server.
    private async Task LockAsync(CancellationToken cancellationToken)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            if (await ScalarAsync<bool>("select pg_try_advisory_lock($1, $2)", cancellationToken).ConfigureAwait(false))
            {
                return;
            }

            var left = _options.LockTimeout - waited.Elapsed;
            if (left <= TimeSpan.Zero)
            {
                var holder = await ScalarAsync<int?>(
                    "select pid from pg_locks where locktype = 'advisory' and granted and classid = $1::int::oid and objid = $2::int::oid " +
                    "and objsubid = 2 and database = (select oid from pg_database where datname = current_database())",
                    cancellationToken).ConfigureAwait(false);
                throw new MigrationLockTimeoutException(
                    $"Shard '{Shard.Name}' is being migrated by another process (server pid {holder?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "unknown"} " +
                    $"holds ShardKit's migration lock for {_history.QualifiedName}); waited {_options.LockTimeout.TotalSeconds:0.###} s. Nothing was " +
                    "applied by this call. Let the other run finish (or raise MigrationOptions.LockTimeout to wait for it), then check GetStatusAsync.")
                {
                    Shard = Shard.Name,
                    LockTimeout = _options.LockTimeout,
                    HolderProcessId = holder,
                };
            }

            await Task.Delay(left < LockPollInterval ? left : LockPollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<T> ScalarAsync<T>(string sql, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(sql, _connection)
        {
            Parameters = { new() { Value = MigrationHistory.LockClass }, new() { Value = _history.LockObject } },
        };
        await using (command.ConfigureAwait(false))
        {
            var value = await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
            return value is null or DBNull ? default! : (T)value;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (_connection.FullState == System.Data.ConnectionState.Open)
            {
                await ScalarAsync<bool>("select pg_advisory_unlock($1, $2)", CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is InvalidOperationException)
        {
            // The lock is a session lock: closing the connection below releases it anyway.
        }

        await _connection.DisposeAsync().ConfigureAwait(false);
    }
}

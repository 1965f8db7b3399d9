using Npgsql;

namespace ShardKit;

/// <summary>
/// The worker-number table on the first shard: one row per worker (0-31) with the end of its lease in id
/// milliseconds. A lease is taken only after it ended, and the taker starts stamping after that end, so two holders of
/// a worker never stamp the same millisecond, whatever their clocks say.
/// </summary>
internal sealed class WorkerLeaseTable(NpgsqlDataSource coordinator, string table)
{
    // Serializes concurrent set-ups of ShardKit's id objects ("SHKID" in ASCII).
    internal const long InstallLockKey = 0x53_48_4B_49_44;

    public string Name => table;

    public async Task EnsureAsync(CancellationToken cancellationToken)
    {
        var connection = await coordinator.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var _ = connection.ConfigureAwait(false);
        var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await using var __ = transaction.ConfigureAwait(false);
        var command = new NpgsqlCommand(
            $"""
             select pg_advisory_xact_lock({InstallLockKey});
             create table if not exists {table} (
                 worker int primary key check (worker between 0 and {ShardId.WorkerCount - 1}),
                 expires_at bigint not null default -1,
                 owner uuid,
                 holder text,
                 renewed_at timestamptz);
             comment on column {table}.expires_at is 'End of the lease in milliseconds since 2025-01-01 UTC; ids of this worker are never stamped later.';
             insert into {table} (worker) select generate_series(0, {ShardId.WorkerCount - 1}) on conflict (worker) do nothing;
             """, connection, transaction);
        await using var ___ = command.ConfigureAwait(false);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Leases the worker idle longest among those released or whose lease ended before <paramref name="now"/>; null
    /// when none. Returns the last millisecond its previous holder may have stamped.
    /// </summary>
    public async Task<(int Worker, long PreviousEnd)?> AcquireAsync(Guid owner, string holder, long now, long end, CancellationToken cancellationToken)
    {
        var command = coordinator.CreateCommand(
            $"""
             with candidate as (
                 select worker, expires_at from {table}
                 where owner is null or expires_at < $1
                 order by expires_at, worker
                 limit 1
                 for update skip locked)
             update {table} w set owner = $2, holder = $3, expires_at = $4, renewed_at = now()
             from candidate c where w.worker = c.worker
             returning w.worker, c.expires_at
             """);
        await using var _ = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = now });
        command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = owner });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = holder });
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = end });
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using var __ = reader.ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? (reader.GetInt32(0), reader.GetInt64(1)) : null;
    }

    /// <summary>Moves the end of a lease this owner still holds; false when another process has taken it.</summary>
    public async Task<bool> RenewAsync(int worker, Guid owner, long end, CancellationToken cancellationToken)
    {
        var command = coordinator.CreateCommand(
            $"update {table} set expires_at = greatest(expires_at, $3), renewed_at = now() where worker = $1 and owner = $2");
        await using var _ = command.ConfigureAwait(false);
        AddLeaseParameters(command, worker, owner, end);
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <summary>Frees a lease at once, recording the last millisecond stamped so the next holder starts after it.</summary>
    public async Task<bool> ReleaseAsync(int worker, Guid owner, long lastStamped, CancellationToken cancellationToken)
    {
        var command = coordinator.CreateCommand(ReleaseSql);
        await using var _ = command.ConfigureAwait(false);
        AddLeaseParameters(command, worker, owner, lastStamped);
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <inheritdoc cref="ReleaseAsync"/>
    public bool Release(int worker, Guid owner, long lastStamped)
    {
        using var command = coordinator.CreateCommand(ReleaseSql);
        AddLeaseParameters(command, worker, owner, lastStamped);
        return command.ExecuteNonQuery() == 1;
    }

    private string ReleaseSql =>
        $"update {table} set owner = null, expires_at = $3, renewed_at = now() where worker = $1 and owner = $2";

    private static void AddLeaseParameters(NpgsqlCommand command, int worker, Guid owner, long milliseconds)
    {
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = worker });
        command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = owner });
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = milliseconds });
    }
}

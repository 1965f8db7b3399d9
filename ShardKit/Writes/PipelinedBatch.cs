using Dapper;
using Npgsql;

namespace ShardKit;

/// <summary>
/// Runs one statement for every item of a shard's group as <see cref="NpgsqlBatch"/>es: one round trip per chunk, not
/// per row. A chunk holds at most <see cref="MaxStatements"/> statements and <see cref="MaxParameters"/> parameters. A
/// statement the server refuses is reported as a <see cref="BatchItemException"/> naming the caller's item.
/// </summary>
internal static class PipelinedBatch
{
    public const int MaxStatements = 1000;

    // PostgreSQL takes at most 65535 parameters per statement; a batch keeps its total at half that.
    public const int MaxParameters = 32767;

    /// <summary>
    /// Runs the group on <paramref name="connection"/> inside <paramref name="transaction"/> (or the connection's
    /// distributed one). With <paramref name="ownTransaction"/> a group that needs more than one round trip runs in a
    /// transaction of its own, so a refused item leaves nothing of the group (one chunk is atomic by itself). A
    /// <paramref name="setup"/> statement (the distributed transaction's lock bound) goes first, in the first round trip,
    /// then the fence statement naming the group's buckets (<paramref name="fence"/>, a <see cref="WriteFence.BucketList"/>),
    /// in every chunk that runs in a transaction of its own, else in the first (it holds for the transaction). Items Dapper
    /// binds one by one (no plan) send the setup alone: their rows' own check runs.
    /// </summary>
    public static async Task<int> ExecuteAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, bool ownTransaction,
        string sql, BatchGroup group, string shard, int? commandTimeout, CancellationToken cancellationToken, string? setup = null,
        string? fence = null)
    {
        var plan = PlanFor(sql, group);
        var perChunk = ChunkSize(plan);
        var own = ownTransaction && transaction is null && group.Count > perChunk
            ? await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false)
            : null;
        try
        {
            var affected = 0;
            for (var start = 0; start < group.Count; start += perChunk)
            {
                var count = Math.Min(perChunk, group.Count - start);
                // Without a transaction each chunk is one of its own: the fence's setting goes with every chunk.
                var first = start == 0 ? setup : null;
                var fenced = start == 0 || (transaction is null && own is null) ? fence : null;
                affected += plan is null
                    ? await PerRowAsync(connection, transaction ?? own, sql, group, start, shard, commandTimeout, cancellationToken, first).ConfigureAwait(false)
                    : await ChunkAsync(connection, transaction ?? own, plan, group, start, count, shard, commandTimeout, cancellationToken, first, fenced)
                        .ConfigureAwait(false);
            }

            if (own is not null)
            {
                await own.CommitAsync(cancellationToken).ConfigureAwait(false);
            }

            return affected;
        }
        finally
        {
            if (own is not null)
            {
                await own.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>The synchronous twin of <see cref="ExecuteAsync"/>.</summary>
    public static int Execute(NpgsqlConnection connection, NpgsqlTransaction? transaction, bool ownTransaction,
        string sql, BatchGroup group, string shard, int? commandTimeout, string? fence = null)
    {
        var plan = PlanFor(sql, group);
        var perChunk = ChunkSize(plan);
        using var own = ownTransaction && transaction is null && group.Count > perChunk ? connection.BeginTransaction() : null;
        var affected = 0;
        for (var start = 0; start < group.Count; start += perChunk)
        {
            var count = Math.Min(perChunk, group.Count - start);
            var fenced = start == 0 || (transaction is null && own is null) ? fence : null;
            affected += plan is null
                ? PerRow(connection, transaction ?? own, sql, group, start, shard, commandTimeout)
                : Chunk(connection, transaction ?? own, plan, group, start, count, shard, commandTimeout, fenced);
        }

        own?.Commit();
        return affected;
    }

    private static BatchPlan? PlanFor(string sql, BatchGroup group) =>
        group.Count > 0 && group.ItemType() is { } type ? BatchPlan.For(type, sql) : null;

    // Without a plan every row is its own round trip, so a "chunk" is one row.
    private static int ChunkSize(BatchPlan? plan) =>
        plan is null ? 1 : Math.Clamp(MaxParameters / Math.Max(1, plan.Parameters.Length), 1, MaxStatements);

    private static async Task<int> ChunkAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, BatchPlan plan,
        BatchGroup group, int start, int count, string shard, int? commandTimeout, CancellationToken cancellationToken, string? setup, string? fence)
    {
        var batch = Build(connection, transaction, plan, group, start, count, commandTimeout);
        var prefix = Prefix(batch, setup, fence);

        await using (batch.ConfigureAwait(false))
        {
            try
            {
                return await batch.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException e) when (ItemOf(batch, e, prefix) is { } item)
            {
                throw new BatchItemException(group.Indexes[start + item], shard, e);
            }
        }
    }

    private static int Chunk(NpgsqlConnection connection, NpgsqlTransaction? transaction, BatchPlan plan,
        BatchGroup group, int start, int count, string shard, int? commandTimeout, string? fence)
    {
        using var batch = Build(connection, transaction, plan, group, start, count, commandTimeout);
        var prefix = Prefix(batch, null, fence);
        try
        {
            return batch.ExecuteNonQuery();
        }
        catch (PostgresException e) when (ItemOf(batch, e, prefix) is { } item)
        {
            throw new BatchItemException(group.Indexes[start + item], shard, e);
        }
    }

    private static async Task<int> PerRowAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, string sql,
        BatchGroup group, int index, string shard, int? commandTimeout, CancellationToken cancellationToken, string? setup)
    {
        if (setup is not null)
        {
            // Without a plan Dapper binds the row (a stored procedure, a type it maps on its own): the setup its own statement.
            var command = new NpgsqlCommand(setup, connection, transaction);
            await using (command.ConfigureAwait(false))
            {
                await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        try
        {
            return await connection.ExecuteAsync(new CommandDefinition(sql, group.Items[index], transaction, commandTimeout,
                cancellationToken: cancellationToken)).ConfigureAwait(false);
        }
        catch (PostgresException e)
        {
            throw new BatchItemException(group.Indexes[index], shard, e);
        }
    }

    private static int PerRow(NpgsqlConnection connection, NpgsqlTransaction? transaction, string sql, BatchGroup group, int index,
        string shard, int? commandTimeout)
    {
        try
        {
            return connection.Execute(new CommandDefinition(sql, group.Items[index], transaction, commandTimeout));
        }
        catch (PostgresException e)
        {
            throw new BatchItemException(group.Indexes[index], shard, e);
        }
    }

    private static NpgsqlBatch Build(NpgsqlConnection connection, NpgsqlTransaction? transaction, BatchPlan plan, BatchGroup group,
        int start, int count, int? commandTimeout)
    {
        var batch = new NpgsqlBatch(connection, transaction);
        if (commandTimeout is { } timeout)
        {
            batch.Timeout = timeout;
        }

        for (var i = start; i < start + count; i++)
        {
            var item = group.Items[i];
            var command = new NpgsqlBatchCommand(plan.Text);
            foreach (var parameter in plan.Parameters)
            {
                var value = new NpgsqlParameter { Value = parameter.Read(item) ?? DBNull.Value };
                if (parameter.DbType is { } dbType)
                {
                    value.DbType = dbType;
                }

                command.Parameters.Add(value);
            }

            batch.BatchCommands.Add(command);
        }

        return batch;
    }

    // The setup and the fence statement in front of a chunk's items; returns how many were put there.
    private static int Prefix(NpgsqlBatch batch, string? setup, string? fence)
    {
        var at = 0;
        if (setup is not null)
        {
            batch.BatchCommands.Insert(at++, new NpgsqlBatchCommand(setup));
        }

        if (fence is not null)
        {
            batch.BatchCommands.Insert(at++, new NpgsqlBatchCommand(WriteFence.NamedPositional) { Parameters = { new NpgsqlParameter { Value = fence } } });
        }

        return at;
    }

    // The statement the server refused, as a position in the chunk (ShardKit turns on IncludeFailedBatchedCommand);
    // null when the error is not one statement's, or a ConfigureShardDataSource turned that setting off. A chunk that
    // starts with setup or fence statements (offset) counts its items after them; their own failure is no item's.
    private static int? ItemOf(NpgsqlBatch batch, PostgresException error, int offset) =>
        error.BatchCommand is NpgsqlBatchCommand failed && batch.BatchCommands.IndexOf(failed) - offset is >= 0 and var index ? index : null;
}

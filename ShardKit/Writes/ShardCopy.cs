using System.Threading.Channels;
using Npgsql;

namespace ShardKit;

/// <summary>
/// The consumer for one shard: opens a transaction, streams the shard's batches into binary COPY statements of at most
/// <see cref="BulkInsertOptions.RowsPerCopy"/> rows each and completes them, leaving the transaction open for the
/// commit step (or for the rollback when any part of the load failed). It keeps the input position of each row of the
/// COPY in flight, so a row the server refuses (named by its COPY line) is mapped back to the caller's input.
/// </summary>
internal sealed class ShardCopy<T>
{
    private readonly ShardSession _session;
    private readonly BulkPlan<T> _plan;
    private readonly int _rowsPerCopy;
    private readonly List<long> _inputIndexes = [];
    private NpgsqlBinaryImporter? _importer;

    // The buckets of the rows the load's map placed on this shard so far (null without a bucket map).
    private readonly Func<IReadOnlyList<int>?> _buckets;

    public ShardCopy(ShardSession session, int shard, BulkPlan<T> plan, int rowsPerCopy, Func<IReadOnlyList<int>?> buckets)
    {
        _session = session;
        _buckets = buckets;
        _plan = plan;
        _rowsPerCopy = rowsPerCopy;
        Shard = shard;
        Name = session.Shards.NameOf(shard);
    }

    public int Shard { get; }

    public string Name { get; }

    /// <summary>The shard's open transaction once its COPY began; committed or rolled back by the load.</summary>
    public NpgsqlTransaction? Transaction { get; private set; }

    /// <summary>Rows the server reported for the completed COPY statements.</summary>
    public long Rows { get; private set; }

    /// <summary>The input row the server refused, when its COPY failed on a row it named.</summary>
    public RefusedInputRow? RefusedRow { get; private set; }

    public async Task RunAsync(ChannelReader<RowBatch<T>> batches, CancellationToken cancellationToken)
    {
        // A shard that gets no row opens no transaction and no COPY.
        if (!await batches.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            return;
        }

        // The COPY is one long command: admitted by the breaker, timed and recorded as one; never tried again (rows
        // already sent cannot be read from the channel twice).
        using var call = new ShardCall(_session.Shards, Shard, ShardCommand.For(BulkLoad.Operation, _plan.CopySql, isWrite: true));
        NpgsqlConnection? connection = null;
        try
        {
            call.Admit();
            call.Start();
            connection = await _session.OpenAsync(Shard, cancellationToken).ConfigureAwait(false);
            if (_session.Enlistment is null)
            {
                // Inside a distributed transaction the connection is already enlisted; the COPY is part of it.
                Transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            }

            await foreach (var batch in batches.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                _importer ??= await connection.BeginBinaryImportAsync(_plan.CopySql, cancellationToken).ConfigureAwait(false);
                await WriteAsync(_importer, batch, cancellationToken).ConfigureAwait(false);
                _inputIndexes.AddRange(batch.Indexes.AsSpan(0, batch.Count));
                batch.Return();
                if (_inputIndexes.Count >= _rowsPerCopy)
                {
                    await CompleteAsync(cancellationToken).ConfigureAwait(false);
                }
            }

            if (_importer is not null)
            {
                await CompleteAsync(cancellationToken).ConfigureAwait(false);
            }

            call.Tag(ShardKitTelemetry.RowsTag, Rows);
            call.Completed(); // the shard took the COPY: a half-open breaker closes
        }
        catch (Exception e) when (e is not ShardKitException && !cancellationToken.IsCancellationRequested)
        {
            // This shard's own failure (the first of the load; failures caused by the load's stop are not the shard's).
            var error = call.Failed(await RefusalByOldMapAsync(e, cancellationToken).ConfigureAwait(false) ?? e, opening: connection is null);
            if (ReferenceEquals(error, e))
            {
                throw;
            }

            throw error;
        }
        finally
        {
            await CloseAsync(_importer).ConfigureAwait(false);
            _importer = null;
        }
    }

    /// <summary>
    /// A COPY routed by a map older than a move's switch reaches the shard that gave the bucket up, which keeps the
    /// bucket's rows until the move's cleanup: a row of the load among them fails as a duplicate (23505) before the
    /// fence's statement trigger could refuse the COPY. Asked then, the fence says whether this shard still owns every
    /// bucket of the rows the load sent it; one it gave up makes the failure the fence's refusal (the load goes again by
    /// the new map), as it would have been without that row. Null when it owns them all (the duplicate is real, also
    /// when other buckets of the shard moved away meanwhile) or cannot be asked (no fence there).
    /// </summary>
    private async Task<ShardBucketMovedException?> RefusalByOldMapAsync(Exception error, CancellationToken cancellationToken)
    {
        if (error is not PostgresException { SqlState: PostgresErrorCodes.UniqueViolation } duplicate || _buckets() is not { Count: > 0 } buckets)
        {
            return null;
        }

        try
        {
            var connection = await _session.Shards.DataSourceAt(Shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await using var connectionLifetime = connection.ConfigureAwait(false);
            // As the fence reads it (shardkit.refuse_unowned): a bucket without a row is not owned either.
            var command = new NpgsqlCommand(
                "select b, coalesce(o.epoch, 0), o.moved_to from unnest($1::int[]) as b left join shardkit.bucket_owner o on o.bucket = b " +
                "where o.owned is not true order by b limit 1", connection);
            await using var commandLifetime = command.ConfigureAwait(false);
            command.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = [.. buckets] });
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using var readerLifetime = reader.ConfigureAwait(false);
            if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                return null;
            }

            var (bucket, epoch, movedTo) = (reader.GetInt32(0), reader.GetInt64(1), reader.IsDBNull(2) ? null : reader.GetString(2));
            RefusedRow = null; // no row of the input is at fault
            return new ShardBucketMovedException(Name, bucket, epoch, movedTo,
                $"Shard '{Name}' refused a bulk load: it gave bucket {bucket} up (epoch {epoch}" + (movedTo is null ? "" : $", to '{movedTo}'") +
                $") and the load was routed by a map older than that move; its COPY met the rows the shard keeps until the move's cleanup " +
                $"({duplicate.MessageText}). No shard kept any row: load again, by the new map.", duplicate);
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is OperationCanceledException)
        {
            return null; // the duplicate stands
        }
    }

    // PostgreSQL reports a refused row only when the COPY ends (it skips the rest of the COPY's data until then), and
    // names it by its line: the position among this COPY's rows, whose input positions are kept until here.
    private async Task CompleteAsync(CancellationToken cancellationToken)
    {
        try
        {
            Rows += checked((long)await _importer!.CompleteAsync(cancellationToken).ConfigureAwait(false));
        }
        catch (PostgresException e) when (CopyRefusedRow.From(e) is { } refused && refused.Line <= _inputIndexes.Count)
        {
            RefusedRow = MapToInput(refused);
            throw;
        }

        await CloseAsync(_importer).ConfigureAwait(false);
        _importer = null;
        _inputIndexes.Clear();
    }

    private RefusedInputRow MapToInput(CopyRefusedRow refused)
    {
        var index = _inputIndexes[(int)(refused.Line - 1)];
        var property = _plan.Columns.FirstOrDefault(c => string.Equals(c.Column, refused.Column, StringComparison.Ordinal))?.Property;
        return new RefusedInputRow(index, property,
            $"row {index}" + (property is null ? "" : $" ({typeof(T).Name}.{property}, column '{refused.Column}')"));
    }

    // Disposing an importer that did not complete cancels its COPY; on a broken connection that can throw, and must
    // not hide the failure that got us here (the transaction is rolled back by the load either way).
    private static async Task CloseAsync(NpgsqlBinaryImporter? importer)
    {
        if (importer is null)
        {
            return;
        }

        try
        {
            await importer.DisposeAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private async Task WriteAsync(NpgsqlBinaryImporter importer, RowBatch<T> batch, CancellationToken cancellationToken)
    {
        var columns = _plan.Columns;
        for (var i = 0; i < batch.Count; i++)
        {
            var row = batch.Rows[i];
            await importer.StartRowAsync(cancellationToken).ConfigureAwait(false);
            for (var c = 0; c < columns.Length; c++)
            {
                var column = columns[c];
                try
                {
                    await column.Write(importer, row, column.DataTypeName, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is InvalidCastException or ArgumentException or OverflowException or NotSupportedException)
                {
                    // Npgsql refuses a value its column type cannot take before sending it: the input is at fault.
                    throw new BulkRowError(
                        $"Row {batch.Indexes[i]}: {typeof(T).Name}.{column.Property} cannot be written to column '{column.Column}' " +
                        $"({column.DataTypeName}): {e.Message}", batch.Indexes[i], column.Property, e);
                }
            }
        }
    }
}

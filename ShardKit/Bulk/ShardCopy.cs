using System.Threading.Channels;
using Npgsql;

namespace ShardKit;

/// <summary>
/// The consumer for one shard: opens a transaction, streams the shard's batches into one binary COPY and completes
/// it, leaving the transaction open for the commit step (or for the rollback when any part of the load failed).
/// </summary>
internal sealed class ShardCopy<T>
{
    private readonly ShardedConnection _connection;
    private readonly BulkPlan<T> _plan;

    public ShardCopy(ShardedConnection connection, int shard, BulkPlan<T> plan)
    {
        _connection = connection;
        _plan = plan;
        Shard = shard;
        Name = connection.DataSource.Map.ShardNames[shard];
    }

    public int Shard { get; }

    public string Name { get; }

    /// <summary>The shard's open transaction once its COPY began; committed or rolled back by the load.</summary>
    public NpgsqlTransaction? Transaction { get; private set; }

    /// <summary>Rows the server reported for the completed COPY.</summary>
    public long Rows { get; private set; }

    public async Task RunAsync(ChannelReader<RowBatch<T>> batches, CancellationToken cancellationToken)
    {
        // A shard that gets no row opens no transaction and no COPY.
        if (!await batches.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            return;
        }

        using var activity = ShardKitTelemetry.StartCommand(BulkLoad.Operation, Name);
        NpgsqlBinaryImporter? importer = null;
        var breaker = _connection.DataSource.BreakerAt(Shard);
        var probe = false;
        try
        {
            probe = breaker.ThrowIfOpen();
            var connection = await _connection.OpenShardAsync(Shard, cancellationToken).ConfigureAwait(false);
            if (_connection.CurrentDistributedTransaction is null)
            {
                // Inside a distributed transaction the connection is already enlisted; the COPY is part of it.
                Transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            }

            importer = await connection.BeginBinaryImportAsync(_plan.CopySql, cancellationToken).ConfigureAwait(false);
            await foreach (var batch in batches.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                await WriteAsync(importer, batch, cancellationToken).ConfigureAwait(false);
                batch.Return();
            }

            Rows = checked((long)await importer.CompleteAsync(cancellationToken).ConfigureAwait(false));
            activity?.SetTag(ShardKitTelemetry.RowsTag, Rows);
            probe = false;
            breaker.OnSuccess(); // the shard took the COPY: a half-open breaker closes
        }
        catch (Exception e)
        {
            ShardKitTelemetry.RecordError(activity, e);
            throw;
        }
        finally
        {
            if (probe)
            {
                breaker.ReleaseProbe(); // a failure is counted by the load; a cancellation proves nothing either way
            }

            await CloseAsync(importer).ConfigureAwait(false);
        }
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

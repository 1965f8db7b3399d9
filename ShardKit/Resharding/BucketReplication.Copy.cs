using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.ExceptionServices;
using Npgsql;

namespace ShardKit;

internal sealed partial class BucketReplication
{
    private const int PumpBufferBytes = 64 * 1024;

    /// <summary>
    /// Copies every (table, bucket) chunk of <paramref name="buckets"/> that <paramref name="isDone"/> does not call done,
    /// <paramref name="parallelism"/> chunks at once, as binary COPY piped from source to target without decoding. The
    /// first copy after <see cref="StartAsync"/> reads under the slot's exported snapshot, then lets it go; after that (and
    /// after a resume) each chunk reads current data. On the target each chunk is one transaction: it deletes the bucket's
    /// rows first, so a chunk copied again replaces itself, then COPY, commit, then <paramref name="chunkDone"/>.
    /// Needs SELECT on the source tables; SELECT, DELETE and INSERT on the target tables.
    /// </summary>
    /// <returns>The rows copied.</returns>
    public async Task<long> CopyAsync(string targetConnectionString, IReadOnlyCollection<int> buckets, int bucketCount, int parallelism,
        Func<string, int, bool> isDone, Func<string, int, long, CancellationToken, Task> chunkDone, IProgress<long>? progress, CancellationToken ct)
    {
        ValidateBuckets(buckets, bucketCount);
        ArgumentOutOfRangeException.ThrowIfLessThan(parallelism, 1);
        var chunks = new ConcurrentQueue<(MovedTable Table, int Bucket)>(
            from table in _tables from bucket in buckets.Distinct().Order() where !isDone(table.QualifiedName, bucket) select (table, bucket));
        var workers = Math.Min(parallelism, chunks.Count);
        var snapshot = _snapshot;
        var importing = workers;
        var allImported = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void Imported()
        {
            if (Interlocked.Decrement(ref importing) == 0)
            {
                allImported.TrySetResult();
            }
        }

        // The first failing chunk stops the others, so the error surfaces without waiting for the whole copy.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        long total = 0;
        async Task WorkAsync()
        {
            var signalled = false;
            try
            {
                var source = await OpenAsync(_source, stop.Token).ConfigureAwait(false);
                await using var sourceLifetime = source.ConfigureAwait(false);
                if (snapshot is not null)
                {
                    await ExecuteAsync(source, "begin isolation level repeatable read read only; set transaction snapshot " +
                                               Literal(snapshot), stop.Token).ConfigureAwait(false);
                }

                signalled = true;
                Imported();
                var target = await OpenTargetAsync(targetConnectionString, stop.Token).ConfigureAwait(false);
                await using var targetLifetime = target.ConfigureAwait(false);
                while (chunks.TryDequeue(out var chunk))
                {
                    var rows = await CopyChunkAsync(source, target, chunk.Table, chunk.Bucket, bucketCount, stop.Token).ConfigureAwait(false);
                    Interlocked.Add(ref total, rows);
                    await chunkDone(chunk.Table.QualifiedName, chunk.Bucket, rows, stop.Token).ConfigureAwait(false);
                    progress?.Report(Interlocked.Read(ref total));
                }
            }
            catch
            {
                await stop.CancelAsync().ConfigureAwait(false);
                throw;
            }
            finally
            {
                if (!signalled)
                {
                    Imported();
                }
            }
        }

        try
        {
            var all = Task.WhenAll(Enumerable.Range(0, workers).Select(_ => Task.Run(WorkAsync, CancellationToken.None)));
            if (snapshot is not null && workers > 0)
            {
                // Every worker holds the snapshot in its own transaction now; the exporting connection may go.
                await Task.WhenAny(allImported.Task, all).ConfigureAwait(false);
                await ReleaseSnapshotAsync().ConfigureAwait(false);
            }

            try
            {
                await all.ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested && all.Exception is { } failures)
            {
                // A worker stopped because another failed: report the failure, not the stop.
                ExceptionDispatchInfo.Throw(failures.InnerExceptions.FirstOrDefault(e => e is not OperationCanceledException) ?? failures.InnerExceptions[0]);
            }

            return total;
        }
        finally
        {
            await ReleaseSnapshotAsync().ConfigureAwait(false);
        }
    }

    private static async Task<long> CopyChunkAsync(NpgsqlConnection source, NpgsqlConnection target, MovedTable table, int bucket, int bucketCount, CancellationToken ct)
    {
        var inBucket = table.BucketSql(bucketCount) + " = " + bucket.ToString(CultureInfo.InvariantCulture);
        var transaction = await target.BeginTransactionAsync(ct).ConfigureAwait(false);
        await using var transactionLifetime = transaction.ConfigureAwait(false);
        await ExecuteAsync(target, $"delete from {table.QualifiedName} where {inBucket}", ct).ConfigureAwait(false);
        var counter = new CopyRowCounter();
        var input = await source.BeginRawBinaryCopyAsync(
            $"copy (select {table.ColumnList} from {table.QualifiedName} where {inBucket}) to stdout (format binary)", ct).ConfigureAwait(false);
        try
        {
            var output = await target.BeginRawBinaryCopyAsync(
                $"copy {table.QualifiedName} ({table.ColumnList}) from stdin (format binary)", ct).ConfigureAwait(false);
            try
            {
                var buffer = new byte[PumpBufferBytes];
                int read;
                while ((read = await input.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
                {
                    counter.Feed(buffer.AsSpan(0, read));
                    await output.WriteAsync(buffer.AsMemory(0, read), ct).ConfigureAwait(false);
                }
            }
            catch
            {
                // Disposing a COPY FROM STDIN completes it; a failed or cancelled chunk must be refused instead.
                await output.CancelAsync().ConfigureAwait(false);
                throw;
            }

            await output.DisposeAsync().ConfigureAwait(false);
        }
        catch
        {
            await input.CancelAsync().ConfigureAwait(false);
            throw;
        }
        finally
        {
            await input.DisposeAsync().ConfigureAwait(false);
        }

        await transaction.CommitAsync(ct).ConfigureAwait(false);
        return counter.Rows;
    }

    private static void ValidateBuckets(IReadOnlyCollection<int> buckets, int bucketCount)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bucketCount, BucketMath.MinBucketCount);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bucketCount, BucketMath.MaxBucketCount);
        if (buckets.Count == 0 || buckets.Any(b => b < 0 || b >= bucketCount))
        {
            throw new ArgumentOutOfRangeException(nameof(buckets), $"Move at least one bucket, each within 0..{bucketCount - 1}.");
        }
    }

    private static string Literal(string text) => "'" + text.Replace("'", "''", StringComparison.Ordinal) + "'";
}

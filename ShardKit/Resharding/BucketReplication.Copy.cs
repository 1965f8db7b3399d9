using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using Npgsql;

namespace ShardKit;

internal sealed partial class BucketReplication
{
    private const int ReadBufferBytes = 64 * 1024;

    // Each scan reads the whole source table once and commits its buckets on the target in one transaction: more
    // buckets per scan read the table fewer times, fewer lose less work to a crash. At least this many to a scan, more
    // when the caller's share of the table allows (BucketsPerScan).
    internal const int MinBucketsPerScan = 8;

    // The 11-byte signature, no flags, no header extension.
    private static readonly byte[] CopyHeader = [(byte)'P', (byte)'G', (byte)'C', (byte)'O', (byte)'P', (byte)'Y', (byte)'\n', 0xff, (byte)'\r', (byte)'\n', 0,
        0, 0, 0, 0, 0, 0, 0, 0];
    private static readonly byte[] CopyTrailer = [0xff, 0xff];

    /// <summary>
    /// Copies every (table, bucket) chunk of <paramref name="buckets"/> that <paramref name="isDone"/> does not call done.
    /// Each table's remaining buckets are cut into groups of at most <paramref name="bucketsPerScan"/> of that table (8
    /// when it does not say; and at least <paramref name="parallelism"/> groups), <paramref name="parallelism"/> groups at once; a group is one scan of the source table (a scan per bucket
    /// would read the table once per bucket) as binary COPY whose rows go to the target undecoded, in one target
    /// transaction. Before the scans, whatever the remaining chunks hold on the target is deleted (one scan of each
    /// target table), so a chunk copied again replaces itself. After
    /// that transaction commits, <paramref name="chunksDone"/> is called once with every bucket of the group. The first copy after
    /// <see cref="StartAsync"/> reads under the slot's exported snapshot, then lets it go; after that (and after a resume)
    /// it reads current data. Needs SELECT on the source tables; SELECT, DELETE and INSERT on the target tables.
    /// </summary>
    /// <param name="targetConnectionString">The target shard.</param>
    /// <param name="buckets">The moving buckets.</param>
    /// <param name="bucketCount">The number of buckets the hash space is cut into.</param>
    /// <param name="parallelism">Scans (source connections, and target connections) at once.</param>
    /// <param name="isDone">Whether a chunk (quoted table name, bucket) was copied before: it is skipped.</param>
    /// <param name="chunksDone">Called after a scan committed on the target, with its chunks (table, then each bucket with its
    /// rows): record them to resume from.</param>
    /// <param name="progress">Rows copied so far.</param>
    /// <param name="bucketsPerScan">The most buckets one scan of a table (quoted name) may copy (<see cref="BucketsPerScanAsync"/>;
    /// never below 8); 8 for a table it does not name, or when null.</param>
    /// <param name="ct">Stops the copy: the groups in flight roll back; committed ones stay.</param>
    /// <returns>The rows copied.</returns>
    public async Task<long> CopyAsync(string targetConnectionString, IReadOnlyCollection<int> buckets, int bucketCount, int parallelism,
        Func<string, int, bool> isDone, Func<string, IReadOnlyList<(int Bucket, long Rows)>, CancellationToken, Task> chunksDone, IProgress<long>? progress,
        IReadOnlyDictionary<string, int>? bucketsPerScan, CancellationToken ct)
    {
        ValidateBuckets(buckets, bucketCount);
        ArgumentOutOfRangeException.ThrowIfLessThan(parallelism, 1);
        var remaining = _tables.Select(table => (Table: table, Buckets: buckets.Distinct().Order().Where(b => !isDone(table.QualifiedName, b)).ToArray()))
            .Where(t => t.Buckets.Length > 0).ToArray();
        var scans = new ConcurrentQueue<(MovedTable Table, int[] Buckets)>(remaining.SelectMany(t =>
            Groups(t.Buckets, parallelism, bucketsPerScan is not null && bucketsPerScan.TryGetValue(t.Table.QualifiedName, out var perScan) ? perScan : MinBucketsPerScan)
                .Select(g => (t.Table, g))));
        if (remaining.Length > 0)
        {
            // Whatever the target holds of the chunks still to copy goes first, in one scan of each table (not one per
            // scan group): copies a crashed mover committed but did not record, or a cancelled move's leftovers. Nothing
            // else writes those buckets there until the switch (the target's fence refuses it), so each group's
            // transaction then only copies.
            await ClearOnTargetAsync(targetConnectionString, remaining, bucketCount, ct).ConfigureAwait(false);
        }
        var workers = Math.Min(parallelism, scans.Count);
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

        // The first failing scan stops the others, so the error surfaces without waiting for the whole copy.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var pace = CopyRowsPerSecond is { } rate ? new CopyPace(rate) : null;
        long total = 0;
        async Task ChunksDoneAsync(MovedTable table, IReadOnlyList<(int Bucket, long Rows)> chunks)
        {
            Interlocked.Add(ref total, chunks.Sum(c => c.Rows));
            await chunksDone(table.QualifiedName, chunks, stop.Token).ConfigureAwait(false);
            progress?.Report(Interlocked.Read(ref total));
        }

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
                                               ReshardingAdmin.Literal(snapshot), stop.Token).ConfigureAwait(false);
                }

                signalled = true;
                Imported();
                var target = await OpenTargetAsync(targetConnectionString, _session, stop.Token).ConfigureAwait(false);
                await using var targetLifetime = target.ConfigureAwait(false);
                while (scans.TryDequeue(out var scan))
                {
                    await CopyScanAsync(source, target, scan.Table, scan.Buckets, bucketCount, ChunksDoneAsync, pace, stop.Token).ConfigureAwait(false);
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
                await ReleaseSnapshotAsync(keep: true).ConfigureAwait(false);
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

    /// <summary>
    /// How many buckets one copy scan of each table (by quoted name) may carry: <paramref name="scanBytes"/> over a bucket's
    /// share of the table's size on disk on <paramref name="source"/> (what a scan reads whatever its buckets; a partitioned
    /// table's partitions together). Small buckets then go many to a scan, so a table is read a few times instead of once
    /// per 8 buckets; <see cref="CopyAsync"/> never sets the limit below 8.
    /// </summary>
    public static async Task<IReadOnlyDictionary<string, int>> BucketsPerScanAsync(NpgsqlConnection source, IReadOnlyList<MovedTable> tables, int bucketCount,
        long scanBytes, CancellationToken ct)
    {
        var command = new NpgsqlCommand(
            // pg_partition_tree lists nothing for a table that is not partitioned.
            "select coalesce((select sum(pg_table_size(p.relid)) from pg_partition_tree(t::regclass) p), pg_table_size(t::regclass))::bigint " +
            "from unnest($1::text[]) with ordinality as x(t, i) order by i", source);
        await using var commandLifetime = command.ConfigureAwait(false);
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = tables.Select(t => t.QualifiedName).ToArray() });
        var perScan = new Dictionary<string, int>(StringComparer.Ordinal);
        var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await using var readerLifetime = reader.ConfigureAwait(false);
        for (var i = 0; await reader.ReadAsync(ct).ConfigureAwait(false); i++)
        {
            var perBucket = Math.Max(1.0, (double)reader.GetInt64(0) / bucketCount);
            perScan[tables[i].QualifiedName] = (int)Math.Clamp(scanBytes / perBucket, 1, bucketCount);
        }

        return perScan;
    }

    private async Task ClearOnTargetAsync(string targetConnectionString, IEnumerable<(MovedTable Table, int[] Buckets)> chunks, int bucketCount,
        CancellationToken ct)
    {
        var target = await OpenTargetAsync(targetConnectionString, _session, ct).ConfigureAwait(false);
        await using var _ = target.ConfigureAwait(false);
        await ExecuteAsync(target, string.Join(";\n", chunks.Select(c =>
            $"delete from {c.Table.QualifiedName} where {c.Table.BucketSql(bucketCount)} in ({WriteFence.BucketList(c.Buckets)})")),
            ct).ConfigureAwait(false);
    }

    // Contiguous runs of the sorted buckets, as even as they come: at least one per parallel scan, at most perScan
    // buckets each (a limit never under MinBucketsPerScan; a run can be shorter, e.g. one bucket per parallel scan).
    internal static IEnumerable<int[]> Groups(int[] buckets, int parallelism, int perScan = MinBucketsPerScan)
    {
        perScan = Math.Max(perScan, MinBucketsPerScan);
        var count = Math.Min(buckets.Length, Math.Max(parallelism, (int)((buckets.Length + (long)perScan - 1) / perScan)));
        for (var i = 0; i < count; i++)
        {
            yield return buckets[(int)((long)buckets.Length * i / count)..(int)((long)buckets.Length * (i + 1) / count)];
        }
    }

    private static async Task CopyScanAsync(NpgsqlConnection source, NpgsqlConnection target, MovedTable table, int[] buckets, int bucketCount,
        Func<MovedTable, IReadOnlyList<(int Bucket, long Rows)>, Task> chunksDone, CopyPace? pace, CancellationToken ct)
    {
        // OFFSET 0 keeps the bucket computed once per row, not again in the filter.
        var list = WriteFence.BucketList(buckets);
        var rows = buckets.ToDictionary(b => b, _ => 0L);
        var copy = await TargetCopy.BeginAsync(target, table, ct).ConfigureAwait(false);
        var input = (NpgsqlRawCopyStream?)null;
        try
        {
            input = await source.BeginRawBinaryCopyAsync(
                $"copy (select s.* from (select ({table.BucketSql(bucketCount)})::int4 as shardkit_bucket, {table.ColumnList} " +
                $"from {table.QualifiedName} offset 0) s where s.shardkit_bucket in ({list})) to stdout (format binary)", ct).ConfigureAwait(false);
            var reader = new BucketRowReader();
            var buffer = new byte[ReadBufferBytes];
            var unpaced = 0;
            int read;
            while ((read = await input.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                reader.Append(buffer.AsSpan(0, read));
                while (reader.TryRead(out var bucket, out var row))
                {
                    rows[bucket]++;
                    await copy.WriteAsync(row, ct).ConfigureAwait(false);
                    if (pace is not null && ++unpaced == pace.Step)
                    {
                        // Not reading holds the source's scan too: its COPY waits on the full socket.
                        await pace.TakeAsync(unpaced, ct).ConfigureAwait(false);
                        unpaced = 0;
                    }
                }
            }

            if (pace is not null && unpaced > 0)
            {
                await pace.TakeAsync(unpaced, ct).ConfigureAwait(false);
            }

            await copy.CommitAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            // The error that stopped the scan is the one to report; a stream a cancelled read already ended is not.
            await QuietlyAsync(copy.AbortAsync).ConfigureAwait(false);
            if (input is not null)
            {
                await QuietlyAsync(input.CancelAsync).ConfigureAwait(false);
                await QuietlyAsync(async () => await input.DisposeAsync().ConfigureAwait(false)).ConfigureAwait(false);
            }

            throw;
        }

        await input.DisposeAsync().ConfigureAwait(false);

        // Committed: every bucket of the scan is done, even if the caller stops now.
        await chunksDone(table, [.. buckets.Select(b => (b, rows[b]))]).ConfigureAwait(false);
    }

    private static async Task QuietlyAsync(Func<Task> cleanup)
    {
        try
        {
            await cleanup().ConfigureAwait(false);
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NpgsqlException or OperationCanceledException)
        {
            // Cleanup after a failure: the connection may be broken or the COPY already over.
        }
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

    /// <summary>
    /// The rows of one scan arriving on the target: a transaction and a binary COPY (what those buckets held there, a
    /// copy committed but not recorded, was deleted before the scans).
    /// </summary>
    private sealed class TargetCopy
    {
        private readonly NpgsqlConnection _target;
        private readonly NpgsqlTransaction _transaction;
        private readonly NpgsqlRawCopyStream _copy;
        private bool _copyEnded;

        private TargetCopy(NpgsqlConnection target, NpgsqlTransaction transaction, NpgsqlRawCopyStream copy)
        {
            _target = target;
            _transaction = transaction;
            _copy = copy;
        }

        public static async Task<TargetCopy> BeginAsync(NpgsqlConnection target, MovedTable table, CancellationToken ct)
        {
            var transaction = await target.BeginTransactionAsync(ct).ConfigureAwait(false);
            try
            {
                var copy = await target.BeginRawBinaryCopyAsync(
                    $"copy {table.QualifiedName} ({table.ColumnList}) from stdin (format binary)", ct).ConfigureAwait(false);
                await copy.WriteAsync(CopyHeader, ct).ConfigureAwait(false);
                return new TargetCopy(target, transaction, copy);
            }
            catch
            {
                await transaction.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }

        public ValueTask WriteAsync(ReadOnlyMemory<byte> row, CancellationToken ct) => _copy.WriteAsync(row, ct);

        public async Task CommitAsync(CancellationToken ct)
        {
            await _copy.WriteAsync(CopyTrailer, ct).ConfigureAwait(false);
            _copyEnded = true;
            await _copy.DisposeAsync().ConfigureAwait(false);
            await _transaction.CommitAsync(ct).ConfigureAwait(false);
            await _transaction.DisposeAsync().ConfigureAwait(false);
        }

        // Disposing a COPY FROM STDIN completes it; a failed or cancelled scan must be refused instead.
        public async Task AbortAsync()
        {
            if (!_copyEnded)
            {
                _copyEnded = true;
                try
                {
                    await _copy.CancelAsync().ConfigureAwait(false);
                }
                catch (NullReferenceException) when (_target.FullState.HasFlag(System.Data.ConnectionState.Broken) || _target.State != System.Data.ConnectionState.Open)
                {
                    // Npgsql's cancel of a COPY whose session was ended (a cancel of the move ends it) fails in its own
                    // cleanup: the session is gone, and its COPY with it.
                }
            }

            await _transaction.DisposeAsync().ConfigureAwait(false);
        }
    }
}

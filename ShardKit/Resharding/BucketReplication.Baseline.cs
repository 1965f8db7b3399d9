using Npgsql;
using NpgsqlTypes;

namespace ShardKit;

internal sealed partial class BucketReplication
{
    /// <summary>
    /// Takes the exact comparison of <see cref="VerifyAsync"/> out of the freeze. While
    /// <paramref name="holdWriters"/> holds the moving buckets' writers (for a few milliseconds), a repeatable-read snapshot
    /// S is taken on the source and a marker M written after it; no write of the buckets commits between the two, so S holds
    /// exactly the buckets' rows of every transaction before M. Catch-up applies everything before M to the target and a
    /// snapshot T is taken there before anything after M is applied, and from M on the stream records every key it brings
    /// (<see cref="StartRecording"/>). Both snapshots are then checksummed, per (table, bucket), while writers run.
    /// <see cref="VerifyBaseline.CheckAsync"/>, in the freeze, completes the comparison from the keys alone.
    /// </summary>
    /// <param name="targetConnectionString">The target shard.</param>
    /// <param name="buckets">The moving buckets.</param>
    /// <param name="bucketCount">The number of buckets the hash space is cut into.</param>
    /// <param name="holdWriters">
    /// Makes the buckets' writers wait (the move's lock on their ownership rows, taken after every transaction that wrote
    /// them ended) and returns what lets them go again; null when the lock could not be had in time (then there is no baseline).
    /// </param>
    /// <param name="ct">Stops it.</param>
    /// <returns>The baseline (dispose it), or null when the writers could not be held.</returns>
    public async Task<VerifyBaseline?> VerifyBeforeFreezeAsync(string targetConnectionString, IReadOnlyCollection<int> buckets, int bucketCount,
        Func<CancellationToken, Task<IAsyncDisposable?>> holdWriters, CancellationToken ct)
    {
        ValidateBuckets(buckets, bucketCount);
        var wanted = buckets.Distinct().Order().ToArray();
        NpgsqlConnection? source = null;
        NpgsqlConnection? target = null;
        try
        {
            source = await OpenAsync(_source, ct).ConfigureAwait(false);
            var nonce = NewMarker();
            var hold = await holdWriters(ct).ConfigureAwait(false);
            if (hold is null)
            {
                await source.DisposeAsync().ConfigureAwait(false);
                return null;
            }

            await using (hold.ConfigureAwait(false))
            {
                // One statement takes the snapshot (at its start) and then writes the marker.
                await ExecuteAsync(source, $"{VerifySettings}; begin isolation level repeatable read; {MarkerSql(nonce)}", ct).ConfigureAwait(false);
            }

            await FlushWalAsync(ct).ConfigureAwait(false);

            await CatchUpToMarkerAsync(targetConnectionString, wanted, bucketCount, nonce, ct).ConfigureAwait(false);
            target = await OpenAsync(targetConnectionString, ct).ConfigureAwait(false);
            await ExecuteAsync(target, $"{VerifySettings}; begin isolation level repeatable read; select 1", ct).ConfigureAwait(false);
            var keys = StartRecording();
            var onSource = new Dictionary<(string, int), (long, decimal)>();
            var onTarget = new Dictionary<(string, int), (long, decimal)>();
            foreach (var table in _tables)
            {
                var (sourceSums, targetSums) = await BothChecksumsAsync(source, target, ChecksumSql(table, bucketCount, keyed: false), wanted, ct)
                    .ConfigureAwait(false);
                Collect(onSource, table, sourceSums);
                Collect(onTarget, table, targetSums);
            }

            return new VerifyBaseline(_tables, wanted, bucketCount, source, target, keys, onSource, onTarget);
        }
        catch
        {
            StopRecording();
            await DisposeQuietlyAsync(source).ConfigureAwait(false);
            await DisposeQuietlyAsync(target).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Runs <see cref="FlushWalSql"/> on a source connection of its own.</summary>
    public async Task FlushWalAsync(CancellationToken ct)
    {
        var connection = await OpenAsync(_source, ct).ConfigureAwait(false);
        await using var connectionLifetime = connection.ConfigureAwait(false);
        await ExecuteAsync(connection, FlushWalSql, ct).ConfigureAwait(false);
    }

    private static void Collect(Dictionary<(string, int), (long, decimal)> into, MovedTable table, Dictionary<int, (long Rows, decimal Sum)> sums)
    {
        foreach (var (bucket, sum) in sums)
        {
            into[(table.QualifiedName, bucket)] = sum;
        }
    }

    // Per bucket: the row count and the sum of the first 64 bits of each row's md5; keyed, only the rows whose primary key
    // is in $2, $3, … (text arrays, one per key column). The buckets are $1.
    private static string ChecksumSql(MovedTable table, int bucketCount, bool keyed)
    {
        var filter = "";
        if (keyed && table.PrimaryKey.Count == 1)
        {
            // One key column: an index scan of the array's keys.
            filter = $" where {MovedTable.Quote(table.PrimaryKey[0])} = any($2::text[]::{table.TypeOf(table.PrimaryKey[0])}[])";
        }
        else if (keyed)
        {
            var columns = string.Join(", ", table.PrimaryKey.Select(MovedTable.Quote));
            var values = string.Join(", ", table.PrimaryKey.Select((c, i) => $"u.k{i}::{table.TypeOf(c)}"));
            var arrays = string.Join(", ", table.PrimaryKey.Select((_, i) => $"${i + 2}::text[]"));
            var names = string.Join(", ", table.PrimaryKey.Select((_, i) => $"k{i}"));
            filter = $" where ({columns}) in (select {values} from unnest({arrays}) as u({names}))";
        }

        return $"select b::int, count(*), sum(('x' || left(md5(row({table.ColumnList})::text), 16))::bit(64)::bigint::numeric) " +
               $"from (select {table.BucketSql(bucketCount)} as b, {table.ColumnList} from {table.QualifiedName}{filter}) r " +
               "where b = any($1) group by b";
    }

    private static async Task DisposeQuietlyAsync(NpgsqlConnection? connection)
    {
        if (connection is not null)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Checksums of the moving rows on both sides at one point of the source's history (see
    /// <see cref="VerifyBeforeFreezeAsync"/>), with the snapshots still open and the keys changed since being recorded.
    /// </summary>
    internal sealed class VerifyBaseline : IAsyncDisposable
    {
        private readonly IReadOnlyList<MovedTable> _tables;
        private readonly int[] _buckets;
        private readonly int _bucketCount;
        private readonly NpgsqlConnection _source;
        private readonly NpgsqlConnection _target;
        private readonly ChangedKeys _keys;
        private readonly Dictionary<(string, int), (long, decimal)> _onSource;
        private readonly Dictionary<(string, int), (long, decimal)> _onTarget;
        private readonly Dictionary<(string, int), (long, decimal)> _sourceThen = [];
        private readonly Dictionary<(string, int), (long, decimal)> _targetThen = [];
        private readonly Dictionary<string, HashSet<string[]>> _covered = new(StringComparer.Ordinal);

        internal VerifyBaseline(IReadOnlyList<MovedTable> tables, int[] buckets, int bucketCount, NpgsqlConnection source, NpgsqlConnection target,
            ChangedKeys keys, Dictionary<(string, int), (long, decimal)> onSource, Dictionary<(string, int), (long, decimal)> onTarget)
        {
            _tables = tables;
            _buckets = buckets;
            _bucketCount = bucketCount;
            _source = source;
            _target = target;
            _keys = keys;
            _onSource = onSource;
            _onTarget = onTarget;
        }

        /// <summary>Keys recorded since the snapshots.</summary>
        public ChangedKeys Keys => _keys;

        /// <summary>
        /// Completes the exact comparison, in the freeze, after the last catch-up (recording stopped): the snapshots' sums
        /// without the recorded keys' rows must agree, and the recorded keys' rows now must agree.
        /// </summary>
        /// <remarks>
        /// Why this equals <see cref="VerifyAsync"/> run now. A row whose key was not recorded is the same now as in the
        /// snapshot on each side: on the source, every write of the buckets not in S committed after M (the writers were
        /// held from S to M), so the stream brought it after M and recorded its key (old and new key of an update, whatever
        /// the bucket; a truncate makes the keys incomplete, and then this cannot decide); on the target only the catch-up
        /// writes these rows (the fence refuses everyone else, since the target does not own the buckets), and after T it
        /// wrote only recorded keys. So per (table, bucket), now = (snapshot − recorded keys' rows in the snapshot) +
        /// recorded keys' rows now, on each side, and both parts are compared. Its cost grows with the rows written since
        /// the snapshots, not with the table; and since a key's rows in the snapshots never change, a rehearsal before the
        /// freeze sums them for the keys recorded by then, and the freeze only for the keys recorded since.
        /// </remarks>
        /// <param name="sourceNow">A source connection that sees the frozen buckets' latest rows (the freeze's own), with <see cref="VerifySettings"/> set.</param>
        /// <param name="targetNow">A target connection that sees the catch-up's latest commits, with <see cref="VerifySettings"/> set.</param>
        /// <param name="rehearsal">
        /// A run before the freeze, with writers running: it keeps the snapshots' sums of the keys recorded so far (the
        /// freeze then sums only the keys recorded after it), and its answer means nothing.
        /// </param>
        /// <param name="ct">Stops it.</param>
        /// <param name="thenOnSource">
        /// Statements sent to <paramref name="sourceNow"/> in the same round trip, after its checksums (the freeze's giving
        /// up of the buckets): they run when the source's checksums did, whatever the comparison finds, and not at all
        /// when this returns null. They may have run when this throws (another connection's part failed).
        /// </param>
        /// <returns>The chunks that differ (empty: the moved rows are the same on both sides), or null when the recorded keys are incomplete.</returns>
        public async Task<IReadOnlyList<ChunkMismatch>?> CheckAsync(NpgsqlConnection sourceNow, NpgsqlConnection targetNow, bool rehearsal, CancellationToken ct,
            IReadOnlyList<string>? thenOnSource = null)
        {
            if (!_keys.Complete)
            {
                return null;
            }

            // Per table, both parts: the fresh keys' rows in the snapshots, and every recorded key's rows now. Each of the
            // four connections gets its tables' checksums in one round trip, all four at once.
            var all = _tables.Select(t => _keys.CopyOf(t.QualifiedName)).ToArray();
            var fresh = _tables.Select((t, i) => FreshKeys(t, all[i])).ToArray();
            var thenChecks = new List<Checksum>();
            var nowChecks = new List<Checksum>();
            for (var i = 0; i < _tables.Count; i++)
            {
                var sql = ChecksumSql(_tables[i], _bucketCount, keyed: true);
                if (fresh[i].Count > 0)
                {
                    thenChecks.Add(new Checksum(sql, KeyArrays(_tables[i], fresh[i])));
                }

                if (all[i].Count > 0)
                {
                    nowChecks.Add(new Checksum(sql, KeyArrays(_tables[i], all[i])));
                }
            }

            // All four sent at once, the source's giving up first (it is what the writers wait for), straight from here: a
            // Task.Run each waits its turn in the thread pool's queue behind the app's own work, inside the writers'
            // pause. All are waited for before an error goes on: a connection closed under a running command hangs.
            var sourceLater = ChecksumsAsync(sourceNow, nowChecks, _buckets, thenOnSource, ct);
            var targetLater = ChecksumsAsync(targetNow, nowChecks, _buckets, null, ct);
            var sourceThen = ChecksumsAsync(_source, thenChecks, _buckets, null, ct);
            var targetThen = ChecksumsAsync(_target, thenChecks, _buckets, null, ct);
            await Task.WhenAll(sourceThen, targetThen, sourceLater, targetLater).ConfigureAwait(false);

            var mismatches = new List<ChunkMismatch>();
            for (int i = 0, then = 0, now = 0; i < _tables.Count; i++)
            {
                var table = _tables[i];
                var sourceFresh = fresh[i].Count > 0 ? sourceThen.Result[then] : Empty;
                var targetFresh = fresh[i].Count > 0 ? targetThen.Result[then++] : Empty;
                var sourceLaterSums = all[i].Count > 0 ? sourceLater.Result[now] : Empty;
                var targetLaterSums = all[i].Count > 0 ? targetLater.Result[now++] : Empty;
                foreach (var bucket in _buckets)
                {
                    var chunk = (table.QualifiedName, bucket);
                    var (sourceRows, sourceSum) = _onSource.GetValueOrDefault(chunk);
                    var (targetRows, targetSum) = _onTarget.GetValueOrDefault(chunk);
                    var s0 = Plus(_sourceThen.GetValueOrDefault(chunk), sourceFresh.GetValueOrDefault(bucket));
                    var t0 = Plus(_targetThen.GetValueOrDefault(chunk), targetFresh.GetValueOrDefault(bucket));
                    var s1 = sourceLaterSums.GetValueOrDefault(bucket);
                    var t1 = targetLaterSums.GetValueOrDefault(bucket);
                    var unchangedAgree = sourceRows - s0.Rows == targetRows - t0.Rows && sourceSum - s0.Sum == targetSum - t0.Sum;
                    if (!unchangedAgree || s1 != t1)
                    {
                        mismatches.Add(new ChunkMismatch(table.QualifiedName, bucket, sourceRows - s0.Rows + s1.Rows, targetRows - t0.Rows + t1.Rows));
                    }
                }

                if (rehearsal)
                {
                    Add(_sourceThen, table, sourceFresh);
                    Add(_targetThen, table, targetFresh);
                    _covered[table.QualifiedName].UnionWith(fresh[i]);
                }
            }

            return mismatches;
        }

        // The key arrays of a keyed checksum: one text array per key column.
        private static string[][] KeyArrays(MovedTable table, IReadOnlyCollection<string[]> keys) =>
            [.. Enumerable.Range(0, table.PrimaryKey.Count).Select(i => keys.Select(k => k[i]).ToArray())];

        private static readonly Dictionary<int, (long Rows, decimal Sum)> Empty = [];

        private static (long Rows, decimal Sum) Plus((long Rows, decimal Sum) a, (long Rows, decimal Sum) b) => (a.Rows + b.Rows, a.Sum + b.Sum);

        // Of the keys recorded (all), those whose rows in the snapshots are not summed yet.
        private List<string[]> FreshKeys(MovedTable table, HashSet<string[]> all)
        {
            if (!_covered.TryGetValue(table.QualifiedName, out var covered))
            {
                covered = new HashSet<string[]>(all.Comparer);
                _covered[table.QualifiedName] = covered;
            }

            return [.. all.Where(k => !covered.Contains(k))];
        }

        private static void Add(Dictionary<(string, int), (long, decimal)> into, MovedTable table, Dictionary<int, (long Rows, decimal Sum)> sums)
        {
            foreach (var (bucket, sum) in sums)
            {
                into[(table.QualifiedName, bucket)] = Plus(into.GetValueOrDefault((table.QualifiedName, bucket)), sum);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _source.DisposeAsync().ConfigureAwait(false);
            await _target.DisposeAsync().ConfigureAwait(false);
        }
    }
}

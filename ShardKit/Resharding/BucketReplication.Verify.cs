using Npgsql;
using NpgsqlTypes;

namespace ShardKit;

internal sealed partial class BucketReplication
{
    // Text output that depends on session settings is pinned, so equal rows print (and hash) alike on both servers.
    public const string VerifySettings =
        "set datestyle = 'ISO, YMD'; set timezone = 'UTC'; set intervalstyle = 'postgres'; set extra_float_digits = 3; set bytea_output = 'hex'";

    /// <summary>
    /// Compares every (table, bucket) chunk of <paramref name="buckets"/> on source and target, computed on the servers:
    /// the row count and the sum of the first 64 bits of each row's md5 (order-free, so no sort). Run it while the
    /// buckets receive no writes (frozen), or it reports the writes in flight. Needs SELECT on both sides.
    /// </summary>
    /// <returns>The chunks that differ; empty when the moved rows are the same on both sides.</returns>
    public static async Task<IReadOnlyList<ChunkMismatch>> VerifyAsync(string sourceConnectionString, string targetConnectionString,
        IReadOnlyList<MovedTable> tables, IReadOnlyCollection<int> buckets, int bucketCount, CancellationToken ct)
    {
        ValidateBuckets(buckets, bucketCount);
        var source = await OpenAsync(sourceConnectionString, ct).ConfigureAwait(false);
        await using var sourceLifetime = source.ConfigureAwait(false);
        var target = await OpenAsync(targetConnectionString, ct).ConfigureAwait(false);
        await using var targetLifetime = target.ConfigureAwait(false);
        await ExecuteAsync(source, VerifySettings, ct).ConfigureAwait(false);
        await ExecuteAsync(target, VerifySettings, ct).ConfigureAwait(false);
        var mismatches = new List<ChunkMismatch>();
        var wanted = buckets.Distinct().Order().ToArray();
        foreach (var table in tables)
        {
            var sql = ChecksumSql(table, bucketCount, keyed: false);
            var (onSource, onTarget) = await BothChecksumsAsync(source, target, sql, wanted, ct).ConfigureAwait(false);
            foreach (var bucket in wanted)
            {
                var s = onSource.GetValueOrDefault(bucket);
                var t = onTarget.GetValueOrDefault(bucket);
                if (s != t)
                {
                    mismatches.Add(new ChunkMismatch(table.QualifiedName, bucket, s.Rows, t.Rows));
                }
            }
        }

        return mismatches;
    }

    /// <summary>
    /// The same checksums on both sides at once. When one side fails (its server stopped), the other side's query is
    /// waited for before the error goes on: its connection is closed next, and closing a connection under a running
    /// command hangs.
    /// </summary>
    private static async Task<(Dictionary<int, (long Rows, decimal Sum)> Source, Dictionary<int, (long Rows, decimal Sum)> Target)> BothChecksumsAsync(
        NpgsqlConnection source, NpgsqlConnection target, string sql, int[] buckets, CancellationToken ct, string[][]? keys = null)
    {
        // Both sent at once, straight from here (as VerifyBaseline.CheckAsync sends its four).
        var onSource = ChecksumsAsync(source, [new Checksum(sql, keys)], buckets, null, ct);
        var onTarget = ChecksumsAsync(target, [new Checksum(sql, keys)], buckets, null, ct);
        await Task.WhenAll(onSource, onTarget).ConfigureAwait(false);
        return ((await onSource.ConfigureAwait(false))[0], (await onTarget.ConfigureAwait(false))[0]);
    }

    /// <summary>One checksum query (<see cref="ChecksumSql"/>) and the key arrays it filters by (null: not keyed).</summary>
    private readonly record struct Checksum(string Sql, string[][]? Keys);

    /// <summary>
    /// The checksums of <paramref name="checks"/>, in order, in one round trip, followed in the same round trip by
    /// <paramref name="after"/> (statements whose results are not read; they run only when every check did). No
    /// statement is sent when there is neither.
    /// </summary>
    private static async Task<List<Dictionary<int, (long Rows, decimal Sum)>>> ChecksumsAsync(NpgsqlConnection connection,
        IReadOnlyList<Checksum> checks, int[] buckets, IReadOnlyList<string>? after, CancellationToken ct)
    {
        var sums = new List<Dictionary<int, (long, decimal)>>(checks.Count);
        if (checks.Count == 0 && after is not { Count: > 0 })
        {
            return sums;
        }

        var batch = new NpgsqlBatch(connection);
        await using var batchLifetime = batch.ConfigureAwait(false);
        foreach (var check in checks)
        {
            var command = new NpgsqlBatchCommand(check.Sql) { Parameters = { new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Integer, Value = buckets } } };
            foreach (var keys in check.Keys ?? [])
            {
                command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text, Value = keys });
            }

            batch.BatchCommands.Add(command);
        }

        foreach (var statement in after ?? [])
        {
            batch.BatchCommands.Add(new NpgsqlBatchCommand(statement));
        }

        var reader = await batch.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await using var readerLifetime = reader.ConfigureAwait(false);
        for (var i = 0; i < checks.Count; i++)
        {
            var chunk = new Dictionary<int, (long, decimal)>();
            while (await reader.ReadAsync(ct).ConfigureAwait(false))
            {
                chunk[reader.GetInt32(0)] = (reader.GetInt64(1), reader.GetDecimal(2));
            }

            sums.Add(chunk);
            await reader.NextResultAsync(ct).ConfigureAwait(false);
        }

        while (await reader.NextResultAsync(ct).ConfigureAwait(false))
        {
            // The results of `after`: an error in it surfaces here.
        }

        return sums;
    }
}

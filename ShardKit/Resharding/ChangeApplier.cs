using System.Text;
using Npgsql;
using Npgsql.Replication.PgOutput;
using Npgsql.Replication.PgOutput.Messages;
using NpgsqlTypes;

namespace ShardKit;

/// <summary>
/// Applies the row changes pgoutput decodes on the source to the target, idempotently by primary key and only for
/// rows of the moving buckets: insert and update become an upsert, an update that changed the key or left the buckets
/// and a delete become a delete that only touches rows of the moving buckets. A value pgoutput leaves out (an unchanged
/// TOAST value) comes from the target's row, or from the source's when the target has none. One target transaction per
/// source transaction; statements go in batches.
/// </summary>
internal sealed class ChangeApplier : IAsyncDisposable
{
    private const int BatchSize = 200;

    private readonly NpgsqlConnection _target;
    private readonly Dictionary<string, MovedTable> _tables;
    private readonly HashSet<int> _buckets;
    private readonly int[] _bucketArray;
    private readonly int _bucketCount;
    private readonly Dictionary<uint, ChangedRelation> _relations = [];
    private readonly Dictionary<string, string> _sql = [];
    private readonly List<(NpgsqlBatchCommand Command, ChangedRelation Relation, ChangedRow Row)> _fromTarget = [];
    private readonly string _sourceConnectionString;
    private NpgsqlConnection? _source;
    private NpgsqlTransaction? _transaction;
    private NpgsqlBatch? _batch;

    public ChangeApplier(string sourceConnectionString, NpgsqlConnection target, IReadOnlyList<MovedTable> tables, IReadOnlyCollection<int> buckets, int bucketCount)
    {
        _sourceConnectionString = sourceConnectionString;
        _target = target;
        _tables = tables.ToDictionary(t => t.Schema + "." + t.Name, StringComparer.Ordinal);
        _buckets = [.. buckets];
        _bucketArray = [.. _buckets.Order()];
        _bucketCount = bucketCount;
    }

    /// <summary>Row changes sent to the target so far.</summary>
    public long Changes { get; private set; }

    /// <summary>Where the keys of every row change from now on are recorded (see <see cref="ChangedKeys"/>); null records none.</summary>
    public ChangedKeys? Recording { get; set; }

    /// <summary>Learns which moved table (if any) a relation id of this stream stands for, and its column order.</summary>
    public void Relation(RelationMessage message)
    {
        if (!_tables.TryGetValue(message.Namespace + "." + message.RelationName, out var table))
        {
            _relations.Remove(message.RelationId);
            return;
        }

        var names = new List<string>();
        foreach (var column in message.Columns)
        {
            names.Add(column.ColumnName);
        }

        _relations[message.RelationId] = new ChangedRelation(table, names);
    }

    public async Task ApplyAsync(PgOutputReplicationMessage message, CancellationToken ct)
    {
        switch (message)
        {
            case InsertMessage insert when _relations.TryGetValue(insert.Relation.RelationId, out var relation):
                var inserted = await RowAsync(relation, insert.NewRow, ct).ConfigureAwait(false);
                Record(relation, inserted);
                await UpsertOrLeaveAsync(relation, inserted, null, isUpdate: false, ct).ConfigureAwait(false);
                break;
            case UpdateMessage update when _relations.TryGetValue(update.Relation.RelationId, out var relation):
                // The old key (when the key changed) comes first in the stream, then the new row.
                var old = update switch
                {
                    IndexUpdateMessage keyed => await RowAsync(relation, keyed.Key, ct).ConfigureAwait(false),
                    FullUpdateMessage full => await RowAsync(relation, full.OldRow, ct).ConfigureAwait(false),
                    _ => null,
                };
                var updated = await RowAsync(relation, update.NewRow, ct).ConfigureAwait(false);
                Record(relation, updated);
                if (old is not null)
                {
                    Record(relation, old);
                }

                await UpsertOrLeaveAsync(relation, updated, old, isUpdate: true, ct).ConfigureAwait(false);
                if (old is not null && !relation.SameKey(old, updated))
                {
                    await DeleteAsync(relation, old, ct).ConfigureAwait(false);
                }

                break;
            case DeleteMessage delete when _relations.TryGetValue(delete.Relation.RelationId, out var relation):
                var deleted = delete switch
                {
                    KeyDeleteMessage keyed => await RowAsync(relation, keyed.Key, ct).ConfigureAwait(false),
                    FullDeleteMessage full => await RowAsync(relation, full.OldRow, ct).ConfigureAwait(false),
                    _ => throw new BucketMoveException($"A delete on {relation.Table.QualifiedName} came without its key; give the table a primary key."),
                };
                Record(relation, deleted);
                await DeleteAsync(relation, deleted, ct).ConfigureAwait(false);
                break;
            case TruncateMessage truncate:
                foreach (var truncated in truncate.Relations)
                {
                    if (_relations.TryGetValue(truncated.RelationId, out var relation))
                    {
                        Recording?.MarkIncomplete();
                        var table = relation.Table;
                        await AddAsync($"delete from {table.QualifiedName} t where {table.BucketSql(_bucketCount, "t")} = any($1)", [Buckets()], ct)
                            .ConfigureAwait(false);
                    }
                }

                break;
        }
    }

    /// <summary>Commits what the source transaction changed on the target.</summary>
    public async Task CommitAsync(CancellationToken ct)
    {
        await FlushAsync(ct).ConfigureAwait(false);
        if (_transaction is { } transaction)
        {
            _transaction = null;
            await transaction.CommitAsync(ct).ConfigureAwait(false);
            await transaction.DisposeAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_source is not null)
        {
            await _source.DisposeAsync().ConfigureAwait(false);
        }

        if (_batch is not null)
        {
            await _batch.DisposeAsync().ConfigureAwait(false);
        }

        if (_transaction is not null)
        {
            await _transaction.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static async Task<ChangedRow> RowAsync(ChangedRelation relation, ReplicationTuple tuple, CancellationToken ct)
    {
        var values = new string?[relation.Columns.Count];
        var unchanged = new bool[values.Length];
        var i = 0;
        await foreach (var value in tuple.ConfigureAwait(false))
        {
            switch (value.Kind)
            {
                case TupleDataKind.Null:
                    break;
                case TupleDataKind.UnchangedToastedValue:
                    unchanged[i] = true;
                    break;
                default:
                    values[i] = await value.Get<string>(ct).ConfigureAwait(false);
                    break;
            }

            i++;
        }

        return new ChangedRow(values, unchanged);
    }

    private void Record(ChangedRelation relation, ChangedRow row)
    {
        if (Recording is { } recording)
        {
            recording.Add(relation.Table.QualifiedName, [.. relation.PrimaryKey.Select(p => row.Values[p] ?? "")]);
        }
    }

    private bool? InBuckets(ChangedRelation relation, ChangedRow row)
    {
        var key = row.Values[relation.KeyIndex];
        return key is null ? null : _buckets.Contains(relation.Table.BucketOfText(key, _bucketCount));
    }

    // A row of the moving buckets is written; a row outside them may have just left them (its shard key changed with
    // the primary key unchanged), which only a delete guarded by the stored row's bucket can tell.
    // (When the shard key is part of the primary key, leaving the buckets changes the key: the old key's delete does it.)
    private async Task UpsertOrLeaveAsync(ChangedRelation relation, ChangedRow row, ChangedRow? old, bool isUpdate, CancellationToken ct)
    {
        if (InBuckets(relation, row) == true)
        {
            await UpsertAsync(relation, row, old, ct).ConfigureAwait(false);
        }
        else if (isUpdate && !relation.KeyInPrimaryKey)
        {
            await DeleteAsync(relation, row, ct).ConfigureAwait(false);
        }
    }

    private async Task UpsertAsync(ChangedRelation relation, ChangedRow row, ChangedRow? old, CancellationToken ct)
    {
        var table = relation.Table;
        var columns = relation.Columns;
        var anyUnchanged = row.Unchanged.Contains(true);
        var shape = new StringBuilder("u:").Append(relation.Table.QualifiedName).Append(':');
        foreach (var flag in row.Unchanged)
        {
            shape.Append(flag ? 'u' : 'v');
        }

        var parameters = new List<object?>();
        for (var i = 0; i < columns.Count; i++)
        {
            if (!row.Unchanged[i])
            {
                parameters.Add(row.Values[i]);
            }
        }

        // An unchanged TOAST value is not in the stream: take it from the target's copy of the row (at its old key).
        var from = old ?? row;
        if (anyUnchanged)
        {
            parameters.AddRange(relation.PrimaryKey.Select(p => from.Values[p]));
        }

        parameters.Add(Buckets());
        var key = shape.ToString();
        if (!_sql.TryGetValue(key, out var sql))
        {
            sql = UpsertSql(relation, row.Unchanged);
            _sql[key] = sql;
        }

        await AddAsync(sql, parameters, ct, anyUnchanged ? (relation, row) : null).ConfigureAwait(false);
    }

    private string UpsertSql(ChangedRelation relation, bool[] unchanged)
    {
        var table = relation.Table;
        var columns = relation.Columns;
        var values = new List<string>();
        var n = 0;
        for (var i = 0; i < columns.Count; i++)
        {
            values.Add(unchanged[i] ? "o." + MovedTable.Quote(columns[i]) : $"${++n}::{table.TypeOf(columns[i])}");
        }

        var keyList = string.Join(", ", relation.PrimaryKey.Select(p => MovedTable.Quote(columns[p])));
        var updates = Enumerable.Range(0, columns.Count).Where(i => !unchanged[i] && !relation.PrimaryKey.Contains(i))
            .Select(i => $"{MovedTable.Quote(columns[i])} = excluded.{MovedTable.Quote(columns[i])}").ToList();
        var source = unchanged.Contains(true)
            ? $" select {string.Join(", ", values)} from {table.QualifiedName} o where " +
              string.Join(" and ", relation.PrimaryKey.Select(p => $"o.{MovedTable.Quote(columns[p])} = ${++n}::{table.TypeOf(columns[p])}"))
            : $" values ({string.Join(", ", values)})";
        var bucketsParameter = ++n;
        var conflict = updates.Count == 0
            ? "do nothing"
            : $"do update set {string.Join(", ", updates)} where {table.BucketSql(_bucketCount, "t")} = any(${bucketsParameter})";
        // overriding system value: the source's row keeps its key also in a `generated always as identity` column.
        return $"insert into {table.QualifiedName} as t ({string.Join(", ", columns.Select(MovedTable.Quote))}) overriding system value{source} " +
               $"on conflict ({keyList}) {conflict}";
    }

    private async Task DeleteAsync(ChangedRelation relation, ChangedRow key, CancellationToken ct)
    {
        if (relation.KeyInPrimaryKey && InBuckets(relation, key) != true)
        {
            return;
        }

        var table = relation.Table;
        var sqlKey = "d:" + table.QualifiedName;
        if (!_sql.TryGetValue(sqlKey, out var sql))
        {
            var n = 0;
            var match = string.Join(" and ", relation.PrimaryKey.Select(p =>
                $"t.{MovedTable.Quote(relation.Columns[p])} = ${++n}::{table.TypeOf(relation.Columns[p])}"));
            sql = $"delete from {table.QualifiedName} t where {match} and {table.BucketSql(_bucketCount, "t")} = any(${++n})";
            _sql[sqlKey] = sql;
        }

        var parameters = relation.PrimaryKey.Select(p => (object?)key.Values[p]).ToList();
        parameters.Add(Buckets());
        await AddAsync(sql, parameters, ct).ConfigureAwait(false);
    }

    private NpgsqlParameter Buckets() => new() { Value = _bucketArray, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Integer };

    private async Task AddAsync(string sql, IEnumerable<object?> values, CancellationToken ct, (ChangedRelation Relation, ChangedRow Row)? fromTarget = null)
    {
        _transaction ??= await _target.BeginTransactionAsync(ct).ConfigureAwait(false);
        _batch ??= new NpgsqlBatch(_target, _transaction);
        var command = new NpgsqlBatchCommand(sql);
        foreach (var value in values)
        {
            // Text as pgoutput sent it, typed by the cast next to its placeholder.
            command.Parameters.Add(value as NpgsqlParameter ?? new NpgsqlParameter { Value = (object?)value ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Unknown });
        }

        _batch.BatchCommands.Add(command);
        if (fromTarget is { } pending)
        {
            _fromTarget.Add((command, pending.Relation, pending.Row));
        }

        Changes++;
        if (_batch.BatchCommands.Count >= BatchSize)
        {
            await FlushAsync(ct).ConfigureAwait(false);
        }
    }

    private async Task FlushAsync(CancellationToken ct)
    {
        if (_batch is { } batch)
        {
            _batch = null;
            await using (batch.ConfigureAwait(false))
            {
                await batch.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }
        }

        // An upsert that took unchanged TOAST values from a row the target does not have (the row just joined the moving
        // buckets) wrote nothing: the source's current row stands in. It may be newer than this change, which is harmless,
        // since every later change to the row is replayed after it.
        var missed = _fromTarget.Where(p => p.Command.RecordsAffected == 0).ToList();
        _fromTarget.Clear();
        foreach (var (_, relation, row) in missed)
        {
            if (await SourceRowAsync(relation, row, ct).ConfigureAwait(false) is { } current && InBuckets(relation, current) == true)
            {
                await UpsertAsync(relation, current, null, ct).ConfigureAwait(false);
            }
        }

        if (missed.Count > 0)
        {
            await FlushAsync(ct).ConfigureAwait(false);
        }
    }

    private async Task<ChangedRow?> SourceRowAsync(ChangedRelation relation, ChangedRow row, CancellationToken ct)
    {
        if (_source is null)
        {
            var source = new NpgsqlConnection(BucketReplication.MoverConnectionString(_sourceConnectionString));
            await source.OpenAsync(ct).ConfigureAwait(false);
            _source = source;
        }

        var table = relation.Table;
        var n = 0;
        var sql = $"select {string.Join(", ", relation.Columns.Select(c => MovedTable.Quote(c) + "::text"))} from {table.QualifiedName} where " +
                  string.Join(" and ", relation.PrimaryKey.Select(p => $"{MovedTable.Quote(relation.Columns[p])} = ${++n}::{table.TypeOf(relation.Columns[p])}"));
        var command = new NpgsqlCommand(sql, _source);
        await using var commandLifetime = command.ConfigureAwait(false);
        foreach (var p in relation.PrimaryKey)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)row.Values[p] ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Unknown });
        }

        var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await using var readerLifetime = reader.ConfigureAwait(false);
        if (!await reader.ReadAsync(ct).ConfigureAwait(false))
        {
            return null;
        }

        var values = new string?[relation.Columns.Count];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = await reader.IsDBNullAsync(i, ct).ConfigureAwait(false) ? null : reader.GetString(i);
        }

        return new ChangedRow(values, new bool[values.Length]);
    }

    private sealed record ChangedRow(string?[] Values, bool[] Unchanged);

    private sealed class ChangedRelation
    {
        public ChangedRelation(MovedTable table, IReadOnlyList<string> columns)
        {
            Table = table;
            Columns = columns;
            KeyIndex = IndexOf(table.KeyColumn);
            PrimaryKey = table.PrimaryKey.Select(IndexOf).ToArray();
            KeyInPrimaryKey = PrimaryKey.Contains(KeyIndex);
        }

        public MovedTable Table { get; }

        public IReadOnlyList<string> Columns { get; }

        public int KeyIndex { get; }

        public int[] PrimaryKey { get; }

        public bool KeyInPrimaryKey { get; }

        public bool SameKey(ChangedRow a, ChangedRow b) => PrimaryKey.All(p => string.Equals(a.Values[p], b.Values[p], StringComparison.Ordinal));

        private int IndexOf(string column)
        {
            for (var i = 0; i < Columns.Count; i++)
            {
                if (Columns[i] == column)
                {
                    return i;
                }
            }

            throw new BucketMoveException($"The replication stream of {Table.QualifiedName} has no column {MovedTable.Quote(column)}; " +
                                          "the table changed since the move started: restart the move.");
        }
    }
}

using System.Data;
using System.Runtime.CompilerServices;
using Dapper;
using Npgsql;

namespace ShardKit;

/// <summary>
/// A deliberate multi-shard target from <see cref="ShardedConnection.AllShards"/> or
/// <see cref="ShardedConnection.Shards"/>. The same SQL and parameters go to every targeted shard at once (bounded by
/// <see cref="FanOutOptions.MaxParallelism"/>); reads are merged by a merge plan, writes report
/// affected rows per shard.
/// </summary>
public sealed partial class FanOutScope
{
    private readonly ShardedConnection _connection;
    private readonly int[] _shards;

    internal FanOutScope(ShardedConnection connection, int[] shards, FanOutOptions options)
    {
        _connection = connection;
        _shards = shards;
        Options = options;
    }

    /// <summary>How this fan-out runs.</summary>
    public FanOutOptions Options { get; }

    /// <summary>The names of the targeted shards.</summary>
    public IReadOnlyList<string> ShardNames => _shards.Select(s => _connection.DataSource.Map.ShardNames[s]).ToArray();

    /// <summary>The same targets with other options (parallelism, timeouts, policy).</summary>
    public FanOutScope WithOptions(FanOutOptions options) =>
        new(_connection, _shards, options ?? throw new ArgumentNullException(nameof(options)));

    /// <summary>The same targets with each shard's read sent by <paramref name="policy"/> (see <see cref="FanOutOptions.ReadPolicy"/>).</summary>
    public FanOutScope WithReadPolicy(ReadPolicy policy) => WithOptions(Options with { ReadPolicy = policy });

    /// <summary>
    /// Runs a statement on every targeted shard in parallel (DDL, migrations, cross-shard updates) and reports the
    /// affected rows per shard and in total. Each shard applies it on its own: when the run fails (any shard with
    /// complete results, every shard with partial results) <see cref="BroadcastWriteException"/> says where it applied,
    /// where it did not, and where the outcome is unknown.
    /// </summary>
    public async Task<BroadcastResult> ExecuteAsync(string sql, object? param = null, int? commandTimeout = null,
        CommandType? commandType = null, CancellationToken cancellationToken = default)
    {
        using var activity = ShardKitTelemetry.StartFanOut("Execute", _shards.Length, "affected-rows");
        using var run = new FanOutRun(_connection.Session, _shards, Options, "Execute", sql, cancellationToken);
        var results = await run.SettleEachAsync((shard, connection, token) =>
        {
            run.MarkSent(shard);
            return connection.ExecuteAsync(new CommandDefinition(sql, param, null, commandTimeout, commandType, CommandFlags.Buffered, token));
        }).ConfigureAwait(false);
        return run.HasFailed
            ? throw run.WriteFailure(results, committed: false, atomic: true)
            : new BroadcastResult(results.ToDictionary(r => run.NameOf(r.Shard), r => r.Result), run.Failures);
    }

    /// <summary>Runs a statement on every targeted shard in parallel and reports the affected rows.</summary>
    public BroadcastResult Execute(string sql, object? param = null, int? commandTimeout = null, CommandType? commandType = null) =>
        Wait(ExecuteAsync(sql, param, commandTimeout, commandType));

    private ShardRowStream<T>[] OpenStreams<T>(FanOutRun run, CommandDefinition command,
        Func<NpgsqlConnection, CommandDefinition, CancellationToken, IAsyncEnumerable<T>>? read = null)
    {
        // While buckets move, a moving bucket's rows may sit on two shards: keep from each shard the rows it owns by
        // the map this read started with, so no row comes twice and none is missed. Only rows that carry their key can
        // be: typed rows by their [ShardKey]; dynamic rows of a query of one moved table alone by its key column.
        var map = _connection.DataSource.Map;
        var owned = map.MovesInFlight && ShardKeyAccessor<T>.HasKey;
        var keyColumn = map.MovesInFlight && !owned && typeof(T) == typeof(object) ? map.Tables.KeyColumnOf(command.CommandText) : null;
        return _shards.Select(shard => new ShardRowStream<T>(run, shard, (connection, token) =>
        {
            var rows = (read ?? ShardRowReader.ReadAsync<T>)(connection, command, token);
            return owned ? OwnedRows(rows, map, shard) : keyColumn is not null ? OwnedByColumn(rows, map, shard, keyColumn) : rows;
        })).ToArray();
    }

    // A dynamic row is kept unless its key column holds a key of a bucket another shard owns: rows without the column
    // (counts, other columns only) or with a null in it cannot be told apart and are kept.
    private static async IAsyncEnumerable<T> OwnedByColumn<T>(IAsyncEnumerable<T> rows, ShardMap map, int shard, string keyColumn)
    {
        await foreach (var row in rows.ConfigureAwait(false))
        {
            if (row is not IDictionary<string, object?> columns || !columns.TryGetValue(keyColumn, out var value)
                || !ShardKeyValue.TryFromObject(value, out var key) || map.Owns(shard, key))
            {
                yield return row;
            }
        }
    }

    private static async IAsyncEnumerable<T> OwnedRows<T>(IAsyncEnumerable<T> rows, ShardMap map, int shard)
    {
        await foreach (var row in rows.ConfigureAwait(false))
        {
            if (row is null || map.Owns(shard, ShardKeyAccessor<T>.ReadOrNone(row)))
            {
                yield return row;
            }
        }
    }
}

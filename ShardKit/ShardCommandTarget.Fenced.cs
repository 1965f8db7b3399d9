using System.Data;
using System.Data.Common;
using Dapper;
using Npgsql;

namespace ShardKit;

/// <summary>
/// Writes sent through <c>Query</c> or <c>ExecuteScalar</c> (<c>insert … returning id</c>, <c>update … returning *</c>):
/// they run as the writes they are (on the primary, never retried as a read would be) and, on a data source that follows
/// a stored map, name their buckets to the shard's fence as <c>Execute</c> does. The fence statement's own result comes
/// first; the caller gets the write's rows.
/// </summary>
public abstract partial class ShardCommandTarget
{
    /// <summary>The command as it runs on the route's shard: fenced when it changes data (see <see cref="FencedWrite"/>).</summary>
    private CommandDefinition QueryBound(in CommandDefinition command, in Route route, bool writes) =>
        writes ? FencedWrite(command, route) : Bind(command, route.Shard, command.Parameters);

    private static string QueryOneName(bool orDefault, bool single) => (orDefault, single) switch
    {
        (false, false) => "QueryFirst",
        (true, false) => "QueryFirstOrDefault",
        (false, true) => "QuerySingle",
        (true, true) => "QuerySingleOrDefault",
    };

    private static bool IsFenced(in CommandDefinition command) =>
        command.CommandText?.StartsWith(WriteFence.Named, StringComparison.Ordinal) == true;

    // Dapper's own task when the command is not fenced: a read gets no frame of ShardKit's around it.
    private static Task<IEnumerable<T>> QueryRowsAsync<T>(NpgsqlConnection connection, CommandDefinition command) =>
        IsFenced(command) ? ReadFencedRowsAsync<T>(connection, command) : connection.QueryAsync<T>(command);

    private static async Task<IEnumerable<T>> ReadFencedRowsAsync<T>(NpgsqlConnection connection, CommandDefinition command) =>
        await ReadFencedAsync<T>(connection, command).ConfigureAwait(false);

    private static IEnumerable<T> QueryRows<T>(NpgsqlConnection connection, CommandDefinition command) =>
        IsFenced(command) ? ReadFenced<T>(connection, command) : connection.Query<T>(command);

    private static Task<T> QueryRowAsync<T>(NpgsqlConnection connection, CommandDefinition command, bool orDefault, bool single) =>
        IsFenced(command) ? ReadFencedRowAsync<T>(connection, command, orDefault, single)
        : (orDefault, single) switch
        {
            (false, false) => connection.QueryFirstAsync<T>(command),
            (true, false) => connection.QueryFirstOrDefaultAsync<T>(command)!,
            (false, true) => connection.QuerySingleAsync<T>(command),
            (true, true) => connection.QuerySingleOrDefaultAsync<T>(command)!,
        };

    private static async Task<T> ReadFencedRowAsync<T>(NpgsqlConnection connection, CommandDefinition command, bool orDefault, bool single) =>
        First(await ReadFencedAsync<T>(connection, command).ConfigureAwait(false), orDefault, single);

    private static T QueryRow<T>(NpgsqlConnection connection, CommandDefinition command, bool orDefault, bool single) =>
        IsFenced(command) ? First(ReadFenced<T>(connection, command), orDefault, single)
        : (orDefault, single) switch
        {
            (false, false) => connection.QueryFirst<T>(command),
            (true, false) => connection.QueryFirstOrDefault<T>(command)!,
            (false, true) => connection.QuerySingle<T>(command),
            (true, true) => connection.QuerySingleOrDefault<T>(command)!,
        };

    private static Task<T?> ScalarAsync<T>(NpgsqlConnection connection, CommandDefinition command) =>
        IsFenced(command) ? ReadFencedScalarAsync<T>(connection, command) : connection.ExecuteScalarAsync<T>(command);

    private static async Task<T?> ReadFencedScalarAsync<T>(NpgsqlConnection connection, CommandDefinition command) =>
        ScalarOf<T>(await ReadFencedAsync<object?>(connection, command, firstValueOnly: true).ConfigureAwait(false));

    private static T? Scalar<T>(NpgsqlConnection connection, CommandDefinition command) =>
        IsFenced(command) ? ScalarOf<T>(ReadFenced<object?>(connection, command, firstValueOnly: true)) : connection.ExecuteScalar<T>(command);

    private static T? ScalarOf<T>(List<object?> values) =>
        values is [{ } value and not DBNull, ..] ? ScalarValues.To<T>(value) : default;

    // The fence statement's row first, then the write's rows. A refusal (the shard does not own a bucket) ends the write's
    // statement before any row is sent: PostgreSQL runs a statement with RETURNING to its end, triggers included, first.
    private static async Task<List<T>> ReadFencedAsync<T>(NpgsqlConnection connection, CommandDefinition command, bool firstValueOnly = false)
    {
        var token = command.CancellationToken;
        var reader = await connection.ExecuteReaderAsync(command, CommandBehavior.SequentialAccess).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            var rows = new List<T>();
            if (await reader.NextResultAsync(token).ConfigureAwait(false) && reader.FieldCount > 0)
            {
                var parse = firstValueOnly ? r => (T)r.GetValue(0) : ShardRowReader.RowParser<T>(reader);
                while (!(firstValueOnly && rows.Count == 1) && await reader.ReadAsync(token).ConfigureAwait(false))
                {
                    rows.Add(parse(reader));
                }
            }

            while (await reader.NextResultAsync(token).ConfigureAwait(false))
            {
                // Further statements of the text run to their end; an error of theirs surfaces here.
            }

            return rows;
        }
    }

    private static List<T> ReadFenced<T>(NpgsqlConnection connection, CommandDefinition command, bool firstValueOnly = false)
    {
        using var reader = connection.ExecuteReader(command, CommandBehavior.SequentialAccess);
        var rows = new List<T>();
        if (reader.NextResult() && reader.FieldCount > 0)
        {
            var parse = firstValueOnly ? r => (T)r.GetValue(0) : ShardRowReader.RowParser<T>((DbDataReader)reader);
            while (!(firstValueOnly && rows.Count == 1) && reader.Read())
            {
                rows.Add(parse((DbDataReader)reader));
            }
        }

        while (reader.NextResult())
        {
            // As above.
        }

        return rows;
    }
}

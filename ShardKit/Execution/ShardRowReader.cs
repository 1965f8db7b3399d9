using Dapper;
using Npgsql;

namespace ShardKit;

/// <summary>Turns a shard's reader into rows: Dapper's row mapping, ShardKit's own read loop.</summary>
internal static class ShardRowReader
{
    public static Func<System.Data.Common.DbDataReader, T> RowParser<T>(System.Data.Common.DbDataReader reader)
    {
        if (!UntypedParser<T>.Needed)
        {
            try
            {
                return reader.GetRowParser<T>();
            }
            catch (InvalidCastException)
            {
                // Dapper hands out an untyped parser for some single-column types (string): remember, so the
                // exception is paid once per type rather than once per shard and query.
                UntypedParser<T>.Needed = true;
            }
        }

        var parse = reader.GetRowParser(typeof(T));
        return r => (T)parse(r)!;
    }

    private static class UntypedParser<T>
    {
        public static bool Needed;
    }

    /// <summary>
    /// Reads rows with Dapper's parameter binding and row mapping but its own loop: Dapper's unbuffered query sends
    /// the server a cancel request (a new socket) whenever it finishes, which a fan-out would pay on every shard.
    /// </summary>
    public static IAsyncEnumerable<T> ReadAsync<T>(NpgsqlConnection connection, CommandDefinition command, CancellationToken cancellationToken) =>
        new ShardRows<T>(connection, command, cancellationToken);

    /// <summary>
    /// A routed unbuffered query: Dapper's binding and mapping, in its transaction, without the cancel request Dapper's
    /// own unbuffered query sends at the end of every stream (only a stream stopped early asks for one, and not inside a
    /// transaction, which the cancel would abort: there the rest of the rows is read).
    /// </summary>
    public static IAsyncEnumerable<T> ReadRoutedAsync<T>(NpgsqlConnection connection, CommandDefinition command, bool inTransaction) =>
        new ShardRows<T>(connection, command, command.CancellationToken, routed: true, inTransaction);

    /// <summary>The same command with the shard's own token (and no transaction: a fan-out runs outside one).</summary>
    public static CommandDefinition WithToken(CommandDefinition command, CancellationToken token) =>
        new(command.CommandText, command.Parameters, null, command.CommandTimeout, command.CommandType, command.Flags, token);
}

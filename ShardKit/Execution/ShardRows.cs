using System.Data;
using System.Data.Common;
using Dapper;
using Npgsql;

namespace ShardKit;

/// <summary>
/// One shard's rows off its reader, as a hand-written enumerator rather than an async iterator: a row already in
/// Npgsql's buffer (its <c>ReadAsync</c> then completes synchronously) costs the parse and nothing else, and a whole
/// shard can be read into a list in one tight loop. Enumerate once.
/// </summary>
/// <param name="connection">The shard's open connection.</param>
/// <param name="command">The query, its parameters bound by Dapper.</param>
/// <param name="cancellationToken">Cancels the query (with the enumerator's token, if one is given).</param>
/// <param name="routed">
/// A routed stream: the command keeps its transaction, and a stream disposed before its end asks the server to cancel
/// the rest (as Dapper's unbuffered query does, but only then). A fan-out's stream cancels on its own terms.
/// </param>
/// <param name="inTransaction">
/// The routed stream runs inside a transaction: one disposed before its end reads the rest of its rows instead, since a
/// cancelled statement would abort the transaction and every later command in it would fail.
/// </param>
internal sealed class ShardRows<T>(NpgsqlConnection connection, CommandDefinition command, CancellationToken cancellationToken, bool routed = false,
    bool inTransaction = false)
    : IAsyncEnumerable<T>, IAsyncEnumerator<T>
{
    private const CommandBehavior ReadBehavior = CommandBehavior.SequentialAccess | CommandBehavior.SingleResult;
    private DbDataReader? _reader;
    private Func<DbDataReader, T>? _parse;
    private bool _ended;
    private CancellationTokenSource? _linked;

    public T Current { get; private set; } = default!;

    public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken token = default)
    {
        if (token.CanBeCanceled && token != cancellationToken)
        {
            // As [EnumeratorCancellation] does: either token cancels.
            _linked = cancellationToken.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, token) : null;
            cancellationToken = _linked?.Token ?? token;
        }

        return this;
    }

    public ValueTask<bool> MoveNextAsync()
    {
        if (_reader is not { } reader)
        {
            return _ended ? new ValueTask<bool>(false) : OpenThenReadAsync();
        }

        var read = reader.ReadAsync(cancellationToken);
        if (!read.IsCompletedSuccessfully)
        {
            return ReadSlowAsync(read);
        }

        return read.Result ? new ValueTask<bool>(Parsed(reader)) : EndAsync();
    }

    /// <summary>Reads every remaining row into <paramref name="rows"/>.</summary>
    public async ValueTask ReadAllAsync(List<T> rows)
    {
        if (_reader is null && !_ended)
        {
            await OpenAsync().ConfigureAwait(false);
        }

        if (_reader is { } reader)
        {
            var parse = _parse!;
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                rows.Add(parse(reader));
            }

            await CloseAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        var cancelled = false;
        if (routed && !inTransaction && _reader is IWrappedDataReader { Command: { } stopped })
        {
            // Stopped before the end: without a cancel, closing the reader would read the rest of the rows.
            try
            {
                stopped.Cancel();
                cancelled = true;
            }
            catch (Exception)
            {
                // Best effort: without the cancel the reader reads on to the end.
            }
        }

        try
        {
            await CloseAsync().ConfigureAwait(false);
        }
        catch (Exception) when (cancelled)
        {
            // The cancel we asked for, reported by the reader it stopped.
        }
        finally
        {
            _linked?.Dispose();
        }
    }

    private async ValueTask<bool> OpenThenReadAsync()
    {
        await OpenAsync().ConfigureAwait(false);
        return await MoveNextAsync().ConfigureAwait(false);
    }

    private async Task OpenAsync()
    {
        // As Dapper's own QueryAsync reads: columns once, in order, so Npgsql need not hold a whole row to hand it out.
        var definition = routed
            ? new CommandDefinition(command.CommandText, command.Parameters, command.Transaction, command.CommandTimeout, command.CommandType, command.Flags, cancellationToken)
            : ShardRowReader.WithToken(command, cancellationToken);
        _reader = await connection.ExecuteReaderAsync(definition, ReadBehavior).ConfigureAwait(false);
        _parse = ShardRowReader.RowParser<T>(_reader);
    }

    private async ValueTask<bool> ReadSlowAsync(Task<bool> read)
    {
        return await read.ConfigureAwait(false) ? Parsed(_reader!) : await EndAsync().ConfigureAwait(false);
    }

    private bool Parsed(DbDataReader reader)
    {
        Current = _parse!(reader);
        return true;
    }

    // The reader is closed as soon as the rows end (as the async iterator's using block did), which reads the
    // command's completion and frees the connection for the next command.
    private async ValueTask<bool> EndAsync()
    {
        await CloseAsync().ConfigureAwait(false);
        return false;
    }

    private async ValueTask CloseAsync()
    {
        _ended = true;
        if (_reader is { } reader)
        {
            _reader = null;
            await reader.DisposeAsync().ConfigureAwait(false);
        }
    }
}

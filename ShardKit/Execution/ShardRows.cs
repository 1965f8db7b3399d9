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
internal sealed class ShardRows<T>(NpgsqlConnection connection, CommandDefinition command, CancellationToken cancellationToken)
    : IAsyncEnumerable<T>, IAsyncEnumerator<T>
{
    private const CommandBehavior ReadBehavior = CommandBehavior.SequentialAccess | CommandBehavior.SingleResult;
    private DbDataReader? _reader;
    private Func<DbDataReader, T>? _parse;
    private bool _ended;

    public T Current { get; private set; } = default!;

    public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken cancellationToken = default) => this;

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

    public ValueTask DisposeAsync() => CloseAsync();

    private async ValueTask<bool> OpenThenReadAsync()
    {
        await OpenAsync().ConfigureAwait(false);
        return await MoveNextAsync().ConfigureAwait(false);
    }

    private async Task OpenAsync()
    {
        // As Dapper's own QueryAsync reads: columns once, in order, so Npgsql need not hold a whole row to hand it out.
        _reader = await connection.ExecuteReaderAsync(ShardRowReader.WithToken(command, cancellationToken), ReadBehavior).ConfigureAwait(false);
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

using System.Data;
using System.Data.Common;
using System.Runtime.ExceptionServices;
using Dapper;
using Npgsql;

namespace ShardKit;

/// <summary>
/// One shard's rows off its reader, as a hand-written enumerator rather than an async iterator: a row already in
/// Npgsql's buffer (its <c>ReadAsync</c> then completes synchronously) costs the parse and nothing else, and a whole
/// shard can be read into a list in one tight loop. A fan-out's rows (not a routed stream's) are read and parsed a batch
/// ahead on the thread pool while the caller takes the batch before, so several shards' rows are parsed at once; a batch
/// goes to the caller as soon as the next row is not yet in, so a slow shard's first rows are not held back. Enumerate once.
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
    // Whole rows, not Dapper's sequential access: there Npgsql's ReadAsync returns once a row begins and the parse reads
    // the rest of a row that spans its buffer synchronously, blocking the pool thread (and the batch) on the socket; and a
    // cancel or per-shard timeout that fired while the reader waited for the server's next rows did not stop the query
    // (the read ended at the command's own timeout, 30 s, instead).
    private const CommandBehavior ReadBehavior = CommandBehavior.SingleResult;

    // A fan-out's rows are parsed ahead on the thread pool, a batch at a time, while the caller takes the batch before:
    // each shard's rows are parsed on a core of their own instead of one after the other on the caller's thread.
    private const int ReadAheadRows = 256;

    // ... and at most about this much memory of rows (what the parse allocated): large rows go a few at a time, so a
    // stream of 100 kB rows holds two batches of about 1 MiB per shard, not 256 rows.
    private const long ReadAheadBytes = 1 << 20;

    private DbDataReader? _reader;
    private Func<DbDataReader, T>? _parse;
    private bool _ended;
    private CancellationTokenSource? _linked;
    private readonly bool _readAhead = !routed;
    private List<T>? _batch; // read ahead, being taken
    private int _batchIndex;
    private Task<ReadAheadBatch>? _filling; // the next batch, being read (the only code touching the reader meanwhile)
    private ExceptionDispatchInfo? _failure; // the read's failure, thrown once the rows before it are taken
    private bool _lastBatch;
    private volatile bool _parseFailed; // a row the parse refused: the rest of the query is cancelled, not read

    public T Current { get; private set; } = default!;

    /// <summary>The rows of the batch being taken (read ahead); 0 when the rows are not read ahead.</summary>
    internal int BatchRows => _batch?.Count ?? 0;

    /// <summary>The batches taken so far.</summary>
    internal int Batches { get; private set; }

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
        if (_batch is { } batch)
        {
            if (++_batchIndex < batch.Count)
            {
                Current = batch[_batchIndex];
                return new ValueTask<bool>(true);
            }

            return NextBatchAsync();
        }

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
                rows.Add(ParseOrMark(parse, reader));
            }

            await CloseAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_filling is { } filling)
        {
            // The reader is the fill's until it ends, and then its batch's pending read's: a read still waiting for the
            // server ends as the reader's own close would have waited for it (its token, or the server's end of the rows).
            _filling = null;
            _batch = null;
            try
            {
                if ((await filling.ConfigureAwait(false)).Pending is { } pending)
                {
                    await pending.ConfigureAwait(false);
                }
            }
            catch (Exception)
            {
                // The rows are no longer wanted; the reader reports its failure again when it closes, if it matters.
            }
        }

        var cancelled = false;
        if ((routed || _parseFailed) && !inTransaction && _reader is IWrappedDataReader { Command: { } stopped })
        {
            // Stopped before the end (or at a row the parse refused, which leaves the reader where it was): without a
            // cancel, closing the reader would read the rest of the rows.
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
        if (_readAhead && _reader is { } reader)
        {
            // The first batch is read here: the first row reaches the caller as soon as it is in, and the fan-out's
            // retry of a failed start sees the failure itself.
            _filling = Task.FromResult(await FillAsync(reader, null).ConfigureAwait(false));
            return await NextBatchAsync().ConfigureAwait(false);
        }

        return await MoveNextAsync().ConfigureAwait(false);
    }

    private readonly record struct ReadAheadBatch(List<T> Rows, Task<bool>? Pending, bool Last, ExceptionDispatchInfo? Failure);

    // Takes the batch read ahead and starts reading the next one; throws the read's failure once the rows before it are
    // all taken, and closes the reader at the end.
    private async ValueTask<bool> NextBatchAsync()
    {
        while (true)
        {
            if (_failure is { } failure)
            {
                _failure = null;
                _batch = null;
                failure.Throw();
            }

            if (_lastBatch || _filling is not { } filling)
            {
                _batch = null;
                await CloseAsync().ConfigureAwait(false);
                return false;
            }

            var next = await filling.ConfigureAwait(false);
            _failure = next.Failure;
            _lastBatch = next.Last;
            _filling = next.Last ? null : FillOnPoolAsync(_reader!, next.Pending);
            _batch = next.Rows;
            _batchIndex = 0;
            Batches++;
            if (next.Rows.Count > 0)
            {
                Current = next.Rows[0];
                return true;
            }
        }
    }

    private Task<ReadAheadBatch> FillOnPoolAsync(DbDataReader reader, Task<bool>? pending) =>
        Task.Run(() => FillAsync(reader, pending), CancellationToken.None);

    // Up to ReadAheadRows rows and ReadAheadBytes; a batch that has rows is handed over as soon as the next row is not
    // in yet (its read goes with the batch, for the next fill to wait on), so a slow shard's rows reach the caller one by
    // one. The bytes are the thread's allocations while it parses (counted again after a wait, which may change thread).
    private async Task<ReadAheadBatch> FillAsync(DbDataReader reader, Task<bool>? pending)
    {
        var parse = _parse!;
        var rows = new List<T>(pending is null ? 16 : ReadAheadRows);
        var limit = GC.GetAllocatedBytesForCurrentThread() + ReadAheadBytes;
        try
        {
            while (rows.Count < ReadAheadRows)
            {
                var read = pending ?? reader.ReadAsync(cancellationToken);
                pending = null;
                if (!read.IsCompleted)
                {
                    if (rows.Count > 0)
                    {
                        return new ReadAheadBatch(rows, read, Last: false, null);
                    }

                    var more = await read.ConfigureAwait(false);
                    limit = GC.GetAllocatedBytesForCurrentThread() + ReadAheadBytes;
                    if (!more)
                    {
                        return new ReadAheadBatch(rows, null, Last: true, null);
                    }
                }
                else if (!await read.ConfigureAwait(false))
                {
                    return new ReadAheadBatch(rows, null, Last: true, null);
                }

                rows.Add(ParseOrMark(parse, reader));
                if (GC.GetAllocatedBytesForCurrentThread() > limit)
                {
                    break;
                }
            }

            return new ReadAheadBatch(rows, null, Last: false, null);
        }
        catch (Exception e)
        {
            return new ReadAheadBatch(rows, null, Last: true, ExceptionDispatchInfo.Capture(e));
        }
    }

    private async Task OpenAsync()
    {
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
        Current = ParseOrMark(_parse!, reader);
        return true;
    }

    private T ParseOrMark(Func<DbDataReader, T> parse, DbDataReader reader)
    {
        try
        {
            return parse(reader);
        }
        catch (Exception)
        {
            _parseFailed = true;
            throw;
        }
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

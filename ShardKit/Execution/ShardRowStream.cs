using Npgsql;
using Polly;

namespace ShardKit;

/// <summary>
/// One shard's rows in a fan-out. The query starts as soon as the stream is created (so every shard is in flight at
/// once, whatever order the merge reads them in); failures and timeouts are turned into the run's policy; disposing
/// early cancels the command on the server rather than draining its rows.
/// </summary>
internal sealed class ShardRowStream<T> : IAsyncEnumerator<T>
{
    private readonly FanOutRun _run;
    private readonly int _shard;
    private readonly CancellationTokenSource _cancel;
    private readonly Task<bool> _first;
    private IAsyncEnumerator<T>? _rows;
    private List<T>? _buffer;
    private int _bufferIndex = -1;
    private bool _started;
    private bool _finished;
    private bool _holdsSlot;
    private ShardCall? _call;
    private ShardServer _server;
    private Exception? _recorded;
    private Task<bool>? _inFlight;
    private NpgsqlConnection? _connection;
    private volatile bool _stopping;

    /// <summary>How long an early stop reads on before cancelling the rest of the query on the server.</summary>
    private static readonly TimeSpan DrainGrace = TimeSpan.FromMilliseconds(20);

    // How long a cancelled query may take to end before it is cancelled again from a second connection (a query that
    // heeds the first cancel ends within milliseconds; Npgsql gives up on its connection after 2 s by default), and how
    // long that second cancel may take (an unreachable shard's stop waits no longer than this twice).
    private static readonly TimeSpan LostCancelGrace = TimeSpan.FromMilliseconds(500);

    // How long cancelling the rest of an early-stopped read may take before the reader reads on to its end instead.
    private static readonly TimeSpan DrainCancelBound = TimeSpan.FromSeconds(5);

    public ShardRowStream(FanOutRun run, int shard, Func<NpgsqlConnection, CancellationToken, IAsyncEnumerable<T>> query)
    {
        _run = run;
        _shard = shard;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(run.Token);

        _first = StartAsync(query);
    }

    public string Shard => _run.NameOf(_shard);

    public T Current => _buffer is not null ? _buffer[_bufferIndex] : _rows!.Current;

    public ValueTask<bool> MoveNextAsync()
    {
        // The per-row path: a row already buffered (here, or in the reader) passes without an asynchronous state machine.
        if (_started && !_finished)
        {
            if (_buffer is not null)
            {
                return ++_bufferIndex < _buffer.Count ? new ValueTask<bool>(true) : Tracked(MoveNextCoreAsync(new ValueTask<bool>(false)));
            }

            if (_rows is ShardRows<T> rows)
            {
                ValueTask<bool> next;
                try
                {
                    next = rows.MoveNextAsync();
                }
                catch (Exception e)
                {
                    next = ValueTask.FromException<bool>(e);
                }

                return next.IsCompletedSuccessfully && next.Result ? next : Tracked(MoveNextCoreAsync(next));
            }
        }

        return Tracked(MoveNextCoreAsync(null));
    }

    /// <summary>Rows read ahead and not yet returned (a run that reads shards whole); a sizing hint.</summary>
    public int BufferedRows => _buffer is { } buffer ? Math.Max(0, buffer.Count - _bufferIndex - 1) : 0;

    /// <summary>
    /// Every row of a shard read whole (<see cref="FanOutRun.Buffered"/>), with the same bookkeeping as reading them one
    /// by one: empty when the shard failed under partial results.
    /// </summary>
    public async Task<(string Shard, List<T> Rows)> ReadWholeAsync()
    {
        if (!await MoveNextAsync().ConfigureAwait(false))
        {
            return (Shard, []);
        }

        var rows = _buffer ?? throw new InvalidOperationException("The run does not read shards whole.");
        _bufferIndex = rows.Count - 1;
        await MoveNextAsync().ConfigureAwait(false); // the end: the call completes, the connection goes back
        return (Shard, rows);
    }

    private ValueTask<bool> Tracked(ValueTask<bool> next)
    {
        if (next.IsCompleted)
        {
            return next;
        }

        // Remembered so an early stop can wait for a read still in flight (an arrival-order merge keeps one per shard).
        var inFlight = next.AsTask();
        _inFlight = inFlight;
        return new ValueTask<bool>(inFlight);
    }

    /// <param name="pending">The read already started by the fast path, if any.</param>
    private async ValueTask<bool> MoveNextCoreAsync(ValueTask<bool>? pending)
    {
        if (_finished)
        {
            return false;
        }

        try
        {
            bool more;
            if (pending is { } read)
            {
                more = await read.ConfigureAwait(false);
            }
            else if (!_started)
            {
                _started = true;
                more = await _first.ConfigureAwait(false);
                _call!.Answered(); // the shard answered: a half-open breaker closes even if the merge stops early
            }
            else if (_buffer is not null)
            {
                more = ++_bufferIndex < _buffer.Count;
            }
            else
            {
                more = await _rows!.MoveNextAsync().ConfigureAwait(false);
            }

            if (!more)
            {
                _call!.Completed();
                await FinishAsync().ConfigureAwait(false);
            }

            return more;
        }
        catch (Exception e) when (e is not ShardAggregateException)
        {
            var failed = _stopping ? null : Settle(e); // an early stop cancelled it: not a failure of the shard
            await FinishAsync().ConfigureAwait(false);
            return failed is null ? false : throw failed;
        }
    }

    // What a failed read means for the run: the caller's cancellation, the first failure of another shard, or this
    // shard's own failure (recorded once), which ends the shard's rows under partial results (null) or fails the run.
    private Exception? Settle(Exception e)
    {
        if (_run.CallerToken.IsCancellationRequested)
        {
            return new OperationCanceledException("The fan-out was cancelled by the caller.", e, _run.CallerToken);
        }

        if (_run.FailedAlready is { } earlier)
        {
            return earlier; // cancelled because another shard failed first
        }

        var error = e is OperationCanceledException && _cancel.IsCancellationRequested
            ? new ShardTimeoutException(Shard, _run.OverallTimedOut ? _run.Options.OverallTimeout!.Value : _run.Options.PerShardTimeout ?? TimeSpan.Zero, _run.OverallTimedOut)
            : e;
        if (!ReferenceEquals(e, _recorded))
        {
            error = _call?.Failed(error, opening: _connection is null) ?? error;
        }

        return _run.Fail(_shard, error);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_finished)
        {
            // Stopping early (a satisfied limit, a first match). A read still waiting for the server is cancelled
            // (Npgsql sends a cancel request); an idle reader is not, since its rest may already be here.
            _stopping = true;
            var waiting = !_started ? _first : _inFlight is { IsCompleted: false } inFlight ? inFlight : null;
            if (waiting is not null)
            {
                if (!InTransaction)
                {
                    await _cancel.CancelAsync().ConfigureAwait(false);
                    // PostgreSQL drops a cancel request that reaches the backend before it has begun the query (a busy
                    // server, a query just sent): Npgsql then gives up on the connection after its cancellation timeout,
                    // and the query runs on to its end on the server. Cancelled again by the backend's id, it stops.
                    if (!await EndsWithinAsync(waiting, LostCancelGrace).ConfigureAwait(false) && _connection is { } connection)
                    {
                        await CancelOnServerAsync(connection, LostCancelGrace).ConfigureAwait(false);
                    }
                }

                try
                {
                    await waiting.ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // The shard's answer is no longer wanted; its failure does not matter now.
                }
            }

            _call?.Stopped(); // the rows wanted arrived; the rest is not the shard's failure
            await StopEarlyAsync().ConfigureAwait(false);
        }

        _call?.Dispose(); // frees a probe the shard never settled
        _cancel.Dispose();
    }

    /// <summary>
    /// Npgsql reads a reader's remaining rows when it is disposed. Rows already here (a pushed-down LIMIT) are cheapest
    /// read to the end; when the rest is large or slow, the query is cancelled on the server after a short grace
    /// (from a second pooled connection, which costs no new socket once the pool is warm). Not inside a distributed
    /// transaction: a cancelled statement aborts the shard's transaction, whose commit would then fail, so the rest of
    /// the rows is read there (a LIMIT in the SQL keeps that short).
    /// </summary>
    private async ValueTask StopEarlyAsync()
    {
        if (_rows is not null && !_finished)
        {
            var drain = DrainAsync(_rows);
            if (!InTransaction && !await EndsWithinAsync(drain, DrainGrace).ConfigureAwait(false) && _connection is { } connection)
            {
                await CancelOnServerAsync(connection, DrainCancelBound).ConfigureAwait(false);
            }

            await drain.ConfigureAwait(false);
        }

        await FinishAsync().ConfigureAwait(false);
    }

    // The shard's connection is a distributed transaction's participant (a fan-out refuses to run in a single-shard one).
    private bool InTransaction => _run.Session.Enlistment is { IsActive: true };

    private static async Task DrainAsync(IAsyncEnumerator<T> rows)
    {
        try
        {
            while (await rows.MoveNextAsync().ConfigureAwait(false))
            {
            }
        }
        catch (Exception)
        {
            // Cancelled on purpose, or the shard failed: its rows are unwanted either way.
        }
    }

    // Whether the task ends (however) within the time; the timer is let go of as soon as it does, not left to run out
    // (an early stop of a fan-out with a limit comes here for every shard still reading).
    private static async Task<bool> EndsWithinAsync(Task task, TimeSpan within)
    {
        if (task.IsCompleted)
        {
            return true;
        }

        using var timer = new CancellationTokenSource();
        var ended = await Task.WhenAny(task, Task.Delay(within, timer.Token)).ConfigureAwait(false) == task;
        await timer.CancelAsync().ConfigureAwait(false);
        return ended;
    }

    private Task CancelOnServerAsync(NpgsqlConnection connection, TimeSpan within) =>
        BackendCancel.SendAsync(_run.Session.Shards, _shard, _server, BackendCancel.IdOf(connection), within);

    // Until a row reaches the caller a failed start is tried again where the shard's pipeline says it is safe (a
    // transient failure, attempts left); a start stopped by a timeout, the caller or another shard's failure is not.
    // It runs on the caller's thread up to the first wait for the server, so each shard's query is sent before the next
    // shard starts, with no thread-pool hop in front of any (a hop cost 0.5-0.7 ms of a 2 ms-away fan-out on a busy VM).
    private async Task<bool> StartAsync(Func<NpgsqlConnection, CancellationToken, IAsyncEnumerable<T>> query)
    {
        return await ShardPipeline.ExecuteAsync(_run.Session.Shards, ShardConnectionSource.Of(_run.Session), _shard, _run.ReadCommand,
            (Stream: this, Query: query), static (context, s) => s.Stream.AttemptAsync(context, s.Query), async: true,
            _cancel.Token).ConfigureAwait(false);
    }

    private async ValueTask<Outcome<bool>> AttemptAsync(ResilienceContext context, Func<NpgsqlConnection, CancellationToken, IAsyncEnumerable<T>> query)
    {
        var first = _call is null;
        _call?.Dispose();
        _server = _run.Session.Choose(_shard, isWrite: false, _run.Options.ReadPolicy); // throws StandbyUnavailableException as it is
        _call = new ShardCall(_run.Session.Shards, _shard, _run.ReadCommand, _server);
        _connection = null;
        try
        {
            return Outcome.FromResult(await StartOnceAsync(query, first).ConfigureAwait(false));
        }
        catch (Exception e) when (e is not ShardKitException && !_cancel.IsCancellationRequested)
        {
            await DisposeRowsAsync().ConfigureAwait(false);
            var error = _call.Failed(e, opening: _connection is null);
            _recorded = error; // counted on the shard already: the read that reports it does not count it again
            ShardPipeline.Failed(context, error);
            return Outcome.FromException<bool>(error);
        }
    }

    private async Task<bool> StartOnceAsync(Func<NpgsqlConnection, CancellationToken, IAsyncEnumerable<T>> query, bool first)
    {
        _call!.Admit();
        if (!_holdsSlot)
        {
            await _run.Slots.WaitAsync(_cancel.Token).ConfigureAwait(false);
            _holdsSlot = true;
        }

        _call.Start(); // the shard's time, not the wait for a slot
        if (first && _run.Options.PerShardTimeout is { } timeout)
        {
            _cancel.CancelAfter(timeout); // from the shard's start, not from when it began waiting for a slot
        }

        var connection = await _run.Session.OpenAsync(_shard, _server, _cancel.Token).ConfigureAwait(false);
        _connection = connection;
        _rows = query(connection, _cancel.Token).GetAsyncEnumerator();
        if (!_run.Buffered)
        {
            return await _rows.MoveNextAsync().ConfigureAwait(false);
        }

        // Fewer slots than shards: read this shard to the end, then free the slot for the next one.
        var buffer = new List<T>();
        if (_rows is ShardRows<T> rows)
        {
            await rows.ReadAllAsync(buffer).ConfigureAwait(false);
        }
        else
        {
            while (await _rows.MoveNextAsync().ConfigureAwait(false))
            {
                buffer.Add(_rows.Current);
            }
        }

        await DisposeRowsAsync().ConfigureAwait(false);
        ReleaseSlot();
        _buffer = buffer;
        _bufferIndex = 0;
        return buffer.Count > 0;
    }

    private async ValueTask DisposeRowsAsync()
    {
        if (_rows is { } rows)
        {
            _rows = null;
            try
            {
                await rows.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception) when (_rows is null)
            {
                // A failed reader may fail again while it is disposed; the first failure is the one reported.
            }
        }
    }

    private async ValueTask FinishAsync()
    {
        if (_finished)
        {
            return;
        }

        _finished = true;
        _call?.Dispose(); // ends the span; the probe is settled by now, or freed
        if (_rows is not null)
        {
            try
            {
                await _rows.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception) when (_cancel.IsCancellationRequested || _stopping)
            {
                // Disposing a reader whose command was just cancelled may report the cancellation again.
            }
        }

        ReleaseSlot();
    }

    private void ReleaseSlot()
    {
        if (_holdsSlot)
        {
            _holdsSlot = false;
            _run.Slots.Release();
        }
    }
}

using System.Collections.Concurrent;

namespace ShardKit;

/// <summary>
/// The shared state of one multi-shard command: which shards, the cancellation that stops all of them, the slots
/// that bound how many run at once, and the failures so far. The failure policy is applied here.
/// </summary>
internal sealed partial class FanOutRun : IDisposable
{
    private readonly CancellationTokenSource _all;
    private readonly CancellationTokenSource? _overall;
    private readonly ConcurrentDictionary<int, ShardFailure> _failures = new();
    private readonly ShardedConnection.OperationScope _operation;

    public FanOutRun(ShardedConnection connection, int[] shards, FanOutOptions options, string operation, string? sql,
        CancellationToken callerToken)
    {
        options.Validate();
        if (connection.CurrentTransaction is { } transaction)
        {
            throw new ShardRoutingException(
                $"A fan-out cannot run inside the single-shard transaction on '{transaction.Shard}'; commit it first, " +
                "or target that shard with OnShard(name).");
        }

        // One fan-out is one operation of the connection, however many shards it opens in parallel.
        _operation = connection.EnterOperation();
        Connection = connection;
        Operation = operation;
        Command = ShardKitTelemetry.Summarize(sql);
        Shards = shards;
        Options = options;
        CallerToken = callerToken;
        if (options.OverallTimeout is { } overall)
        {
            _overall = new CancellationTokenSource(overall);
        }

        _all = _overall is null
            ? CancellationTokenSource.CreateLinkedTokenSource(callerToken)
            : CancellationTokenSource.CreateLinkedTokenSource(callerToken, _overall.Token);
        ShardKitTelemetry.RecordFanOutWidth(shards.Length, operation, Command);
        var width = Math.Min(options.MaxParallelism ?? shards.Length, shards.Length);
        Buffered = width < shards.Length;
        Slots = new SemaphoreSlim(width, width);
    }

    public ShardedConnection Connection { get; }

    /// <summary>The command's name in telemetry and logs (Query, Execute, ExecuteScalar, …).</summary>
    public string Operation { get; }

    /// <summary>The statement's operation and table, for each shard's span and duration.</summary>
    public CommandSummary Command { get; }

    public int[] Shards { get; }

    public FanOutOptions Options { get; }

    public CancellationToken CallerToken { get; }

    /// <summary>Cancelled by the caller, the overall timeout, or (complete results) the first failure.</summary>
    public CancellationToken Token => _all.Token;

    /// <summary>True when fewer slots than shards: each shard buffers its rows while it holds a slot.</summary>
    public bool Buffered { get; }

    public SemaphoreSlim Slots { get; }

    public bool OverallTimedOut => _overall?.IsCancellationRequested == true;

    public string NameOf(int shard) => Connection.DataSource.Map.ShardNames[shard];

    public IReadOnlyList<ShardFailure> Failures =>
        _failures.OrderBy(f => f.Key).Select(f => f.Value).ToArray();

    /// <summary>
    /// Records a shard's failure. Complete results: cancels every other shard and returns the exception to throw.
    /// Partial results: returns null (the shard's stream just ends) unless every shard has now failed.
    /// </summary>
    public ShardAggregateException? Fail(int shard, Exception error)
    {
        _failures.TryAdd(shard, new ShardFailure(NameOf(shard), error));
        ShardKitTelemetry.RecordFailure(NameOf(shard), error);
        ShardKitLog.FanOutShardFailed(Connection.DataSource.Logger, Operation, NameOf(shard), Options.Policy, error.GetType().Name);
        if (Options.Policy == FanOutPolicy.CompleteResults)
        {
            _all.Cancel();
            return new ShardAggregateException(Failures);
        }

        return _failures.Count == Shards.Length ? new ShardAggregateException(Failures) : null;
    }

    /// <summary>After a complete-results failure every other shard is cancelled: they rethrow the real failures.</summary>
    public ShardAggregateException? FailedAlready =>
        Options.Policy == FanOutPolicy.CompleteResults && !_failures.IsEmpty ? new ShardAggregateException(Failures) : null;

    /// <summary>
    /// Runs <paramref name="work"/> on every shard of the run at once (within the slots and timeouts) and returns the
    /// results of the shards that succeeded, in shard order; failures follow the run's policy.
    /// </summary>
    public Task<(int Shard, TResult Result)[]> RunEachAsync<TResult>(Func<Npgsql.NpgsqlConnection, CancellationToken, Task<TResult>> work) =>
        RunEachAsync<TResult>((_, connection, token) => work(connection, token));

    /// <summary>Like the overload above, for work that differs by shard (it receives the shard's index).</summary>
    public async Task<(int Shard, TResult Result)[]> RunEachAsync<TResult>(Func<int, Npgsql.NpgsqlConnection, CancellationToken, Task<TResult>> work)
    {
        var succeeded = await SettleEachAsync(work).ConfigureAwait(false);
        return HasFailed ? throw new ShardAggregateException(Failures) : succeeded;
    }

    /// <summary>
    /// Like <see cref="RunEachAsync{TResult}(Func{int, Npgsql.NpgsqlConnection, CancellationToken, Task{TResult}})"/>
    /// but never throws for failed shards: it returns the results of those that succeeded, and the caller reports the
    /// rest (writes say what each shard kept). Only the caller's cancellation throws.
    /// </summary>
    public async Task<(int Shard, TResult Result)[]> SettleEachAsync<TResult>(Func<int, Npgsql.NpgsqlConnection, CancellationToken, Task<TResult>> work)
    {
        var tasks = Shards.Select(shard => RunOneAsync(shard, work)).ToArray();
        var outcomes = await Task.WhenAll(tasks).ConfigureAwait(false);
        CallerToken.ThrowIfCancellationRequested();
        return outcomes.Where(o => o.Ok).Select(o => (o.Shard, o.Result!)).ToArray();
    }

    /// <summary>True when the run failed under its policy: any shard (complete results) or every shard (partial results).</summary>
    public bool HasFailed => Options.Policy == FanOutPolicy.CompleteResults ? !_failures.IsEmpty : _failures.Count == Shards.Length;

    private async Task<(int Shard, bool Ok, TResult? Result)> RunOneAsync<TResult>(int shard,
        Func<int, Npgsql.NpgsqlConnection, CancellationToken, Task<TResult>> work)
    {
        await Task.Yield();
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Token);

        var holdsSlot = false;
        var probe = false;
        Npgsql.NpgsqlConnection? connection = null;
        var breaker = Connection.DataSource.BreakerAt(shard);
        using var activity = ShardKitTelemetry.StartCommand(Operation, Connection.DataSource.Map.Shards[shard], Command);
        var started = 0L;
        try
        {
            // An open breaker fails this shard at once: partial results list it without waiting for a timeout.
            probe = breaker.ThrowIfOpen();
            await Slots.WaitAsync(cancel.Token).ConfigureAwait(false);
            holdsSlot = true;
            started = System.Diagnostics.Stopwatch.GetTimestamp(); // the shard's time, not the wait for a slot
            if (Options.PerShardTimeout is { } timeout)
            {
                cancel.CancelAfter(timeout); // from the shard's start, not from when it began waiting for a slot
            }

            connection = await Connection.OpenShardAsync(shard, cancel.Token).ConfigureAwait(false);
            var result = await work(shard, connection, cancel.Token).ConfigureAwait(false);
            probe = false;
            breaker.OnSuccess();
            ShardKitTelemetry.RecordDuration(NameOf(shard), Command, started);
            return (shard, true, result);
        }
        catch (Exception e) when (!CallerToken.IsCancellationRequested)
        {
            probe = false; // the failure settles it: a connection failure opens the breaker again, anything else frees it
            var error = ShardErrors.ForShard(e, Connection.DataSource.Map.Shards[shard], opening: connection is null);
            breaker.OnFailure(error);
            ShardKitTelemetry.RecordError(activity, error);
            if (started != 0)
            {
                ShardKitTelemetry.RecordDuration(NameOf(shard), Command, started, error);
            }

            if (FailedAlready is null)
            {
                Fail(shard, error is OperationCanceledException && cancel.IsCancellationRequested
                    ? new ShardTimeoutException(NameOf(shard), OverallTimedOut ? Options.OverallTimeout!.Value : Options.PerShardTimeout ?? TimeSpan.Zero, OverallTimedOut)
                    : error);
            }
            else
            {
                Stopped(shard, e); // cancelled because another shard failed: a write still reports what it kept here
            }

            return (shard, false, default);
        }
        finally
        {
            if (probe)
            {
                breaker.ReleaseProbe(); // the caller gave up before the shard answered: it proved nothing either way
            }

            if (holdsSlot)
            {
                Slots.Release();
            }
        }
    }

    public void Dispose()
    {
        _operation.Dispose();
        _all.Dispose();
        _overall?.Dispose();
        Slots.Dispose();
    }
}

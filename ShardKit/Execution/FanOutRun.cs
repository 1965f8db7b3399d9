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
    private readonly ShardSession.OperationScope _operation;

    public FanOutRun(ShardSession session, int[] shards, FanOutOptions options, string operation, string? sql,
        CancellationToken callerToken)
    {
        options.Validate();
        if (session.Pinned is { } pinned)
        {
            throw new ShardRoutingException(
                $"A fan-out cannot run inside the single-shard transaction on '{session.Shards.NameOf(pinned.Shard)}'; commit it first, " +
                "or target that shard with OnShard(name).");
        }

        // One fan-out is one operation of the connection, however many shards it opens in parallel.
        _operation = session.EnterOperation();
        Session = session;
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

    public ShardSession Session { get; }

    /// <summary>The command's name in telemetry and logs (Query, Execute, ExecuteScalar, …).</summary>
    public string Operation { get; }

    /// <summary>The statement's operation and table, for each shard's span and duration.</summary>
    public CommandSummary Command { get; }

    /// <summary>A read of this run as the pipeline records and retries it (fan-out rows are read by their streams).</summary>
    public ShardCommand ReadCommand => new(Operation, Command, IsWrite: false);

    public int[] Shards { get; }

    public FanOutOptions Options { get; }

    public CancellationToken CallerToken { get; }

    /// <summary>Cancelled by the caller, the overall timeout, or (complete results) the first failure.</summary>
    public CancellationToken Token => _all.Token;

    /// <summary>
    /// True when each shard reads its rows to the end while it holds a slot: when there are fewer slots than shards,
    /// or when the caller collects every row anyway (<see cref="ReadShardsWhole"/>).
    /// </summary>
    public bool Buffered { get; private set; }

    public SemaphoreSlim Slots { get; }

    /// <summary>
    /// Each shard reads all its rows on its own, in parallel with the others, before the merge sees them: for a caller
    /// that collects every row, so no limit can stop a shard early and nothing is saved by streaming.
    /// </summary>
    public void ReadShardsWhole() => Buffered = true;

    public bool OverallTimedOut => _overall?.IsCancellationRequested == true;

    public string NameOf(int shard) => Session.Shards.NameOf(shard);

    public IReadOnlyList<ShardFailure> Failures =>
        _failures.OrderBy(f => f.Key).Select(f => f.Value).ToArray();

    /// <summary>
    /// Records a shard's failure. Complete results: cancels every other shard and returns the exception to throw.
    /// Partial results: returns null (the shard's stream just ends) unless every shard has now failed.
    /// </summary>
    public ShardAggregateException? Fail(int shard, Exception error)
    {
        _failures.TryAdd(shard, new ShardFailure(NameOf(shard), error));
        ShardKitLog.FanOutShardFailed(Session.Shards.Logger, Operation, NameOf(shard), Options.Policy, error.GetType().Name);
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
        var succeeded = await SettleCoreAsync(work, isWrite: false).ConfigureAwait(false);
        return HasFailed ? throw new ShardAggregateException(Failures) : succeeded;
    }

    /// <summary>
    /// Like <see cref="RunEachAsync{TResult}(Func{int, Npgsql.NpgsqlConnection, CancellationToken, Task{TResult}})"/>
    /// but never throws for failed shards: it returns the results of those that succeeded, and the caller reports the
    /// rest (writes say what each shard kept). Only the caller's cancellation throws.
    /// </summary>
    public Task<(int Shard, TResult Result)[]> SettleEachAsync<TResult>(Func<int, Npgsql.NpgsqlConnection, CancellationToken, Task<TResult>> work) =>
        SettleCoreAsync(work, isWrite: true);

    private async Task<(int Shard, TResult Result)[]> SettleCoreAsync<TResult>(Func<int, Npgsql.NpgsqlConnection, CancellationToken, Task<TResult>> work,
        bool isWrite)
    {
        // A read may be tried again on its shard; a write reports what each shard kept instead, and is never repeated.
        var command = new ShardCommand(Operation, Command, isWrite, Slots, Options.PerShardTimeout, Once: isWrite);
        var tasks = Shards.Select(shard => RunOneAsync(shard, command, work)).ToArray();
        var outcomes = await Task.WhenAll(tasks).ConfigureAwait(false);
        CallerToken.ThrowIfCancellationRequested();
        return outcomes.Where(o => o.Ok).Select(o => (o.Shard, o.Result!)).ToArray();
    }

    /// <summary>True when the run failed under its policy: any shard (complete results) or every shard (partial results).</summary>
    public bool HasFailed => Options.Policy == FanOutPolicy.CompleteResults ? !_failures.IsEmpty : _failures.Count == Shards.Length;

    private async Task<(int Shard, bool Ok, TResult? Result)> RunOneAsync<TResult>(int shard, ShardCommand command,
        Func<int, Npgsql.NpgsqlConnection, CancellationToken, Task<TResult>> work)
    {
        // No yield first: the shard's command is sent on the caller's thread before the next shard starts (see ShardRowStream).
        try
        {
            var result = await ShardPipeline.RunAsync(Session.Shards, ShardConnectionSource.Of(Session, Options.ReadPolicy), shard, command, (Shard: shard, Work: work),
                static (connection, s, token) => new ValueTask<TResult>(s.Work(s.Shard, connection, token)), async: true, Token).ConfigureAwait(false);
            return (shard, true, result);
        }
        catch (Exception e) when (!CallerToken.IsCancellationRequested)
        {
            Settle(shard, e);
            return (shard, false, default);
        }
    }

    /// <summary>
    /// Applies the run's policy to a shard that did not finish: its own failure (an open breaker, a timeout, an error),
    /// or the overall timeout; a shard cancelled because another one failed first only reports what it kept.
    /// </summary>
    public void Settle(int shard, Exception error)
    {
        if (FailedAlready is not null)
        {
            Stopped(shard, error);
        }
        else if (error is OperationCanceledException && OverallTimedOut)
        {
            Fail(shard, new ShardTimeoutException(NameOf(shard), Options.OverallTimeout!.Value, overall: true));
        }
        else
        {
            Fail(shard, error);
        }
    }

    public void Dispose()
    {
        _operation.Dispose();
        _all.Dispose();
        _overall?.Dispose();
        // Slots is not disposed: a shard's read that fails after the run ended still gives its slot back (a disposed
        // semaphore threw there, unobserved), and a SemaphoreSlim whose wait handle was never asked for holds nothing.
    }
}

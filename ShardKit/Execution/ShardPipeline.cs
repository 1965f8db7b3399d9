using System.Runtime.ExceptionServices;
using Npgsql;
using Polly;

namespace ShardKit;

/// <summary>
/// The one way a command reaches a shard, whatever the path (routed, fan-out, batch, two-phase steps, recovery):
/// breaker → slot → timeout → connection → command → one classification of a failure → span and duration, as one
/// attempt; another attempt where safe comes from the shard's Polly pipeline (<see cref="ShardSet.PipelineAt"/>). A
/// concern that belongs to every command is added here, once. Streams, whose rows outlive one call, run their start (up
/// to the shard's first answer) through <see cref="ExecuteAsync"/> with attempts of their own.
/// </summary>
internal static class ShardPipeline
{
    /// <summary>
    /// Runs <paramref name="work"/> on <paramref name="shard"/>. With <paramref name="async"/> false every step runs
    /// synchronously and the returned task is already complete (the synchronous API's path, with no blocking on
    /// async work). Errors ShardKit raises itself pass through unchanged; caller cancellation passes through unrecorded.
    /// The state argument lets callers pass a static lambda, so the hot path captures nothing.
    /// </summary>
    public static ValueTask<TResult> RunAsync<TState, TResult>(ShardSet shards, ShardConnectionSource source, int shard,
        ShardCommand command, TState state, Func<NpgsqlConnection, TState, CancellationToken, ValueTask<TResult>> work, bool async,
        CancellationToken cancellationToken) =>
        ExecuteAsync(shards, source, shard, command, (Shards: shards, Source: source, Shard: shard, Command: command, State: state,
            Work: work, Async: async, Caller: cancellationToken), static (context, s) => AttemptAsync(context, s.Shards, s.Source, s.Shard,
            s.Command, s.State, s.Work, s.Async, s.Caller), async, cancellationToken);

    /// <summary>
    /// Runs <paramref name="attempt"/> through the shard's pipeline when the command may run again (a read or a write the
    /// retry options allow, retries not turned off, never inside a transaction or on a given connection, never a command
    /// run <c>Once</c>), once and directly otherwise. An attempt returns its failure as an outcome (nothing is thrown per
    /// attempt) and records it on the shard with <see cref="Failed"/>; the failure the caller gets is the last one
    /// recorded, also when a later attempt is refused by the breaker our own retries opened. Logs that failure once.
    /// </summary>
    public static async ValueTask<TResult> ExecuteAsync<TState, TResult>(ShardSet shards, ShardConnectionSource source, int shard,
        ShardCommand command, TState state, Func<ResilienceContext, TState, ValueTask<Outcome<TResult>>> attempt, bool async,
        CancellationToken cancellationToken)
    {
        var retries = source.Retries(shards);
        var mayRepeat = source.MayRetry && !command.Once && (!command.IsWrite || retries.RetryWrites) && retries.MaxRetries > 0;
        var context = ResilienceContextPool.Shared.Get(cancellationToken);
        context.Properties.Set(ShardRetryStrategy.Options, retries);
        context.Properties.Set(ShardRetryStrategy.Operation, command.Operation);
        try
        {
            if (!mayRepeat)
            {
                return ResultOf(await attempt(context, state).ConfigureAwait(false)); // complete already when not async
            }

            var pipeline = shards.PipelineAt(shard);
            if (!shards.HasCustomResilience)
            {
                // ShardKit's own retry: the first attempt runs outside Polly, whose async frames cost about 2 KB per call
                // that goes async, and most calls succeed at once. A failure the retry handles enters the pipeline as its
                // first attempt's outcome, replayed, so the retry decides, logs, waits and counts exactly as it would have.
                var first = await attempt(context, state).ConfigureAwait(false);
                if (first.Exception is not { } error || !ShardErrors.IsTransient(error))
                {
                    return ResultOf(first);
                }

                var replay = new ReplayedFirst<TState, TResult>(first, attempt, state);
                return async
                    ? ResultOf(await pipeline.ExecuteOutcomeAsync(static (c, r) => r.NextAsync(c), context, replay).ConfigureAwait(false))
                    : pipeline.Execute(static (c, r) => ResultOf(r.NextAsync(c).GetAwaiter().GetResult()), context, replay);
            }

            return async
                ? ResultOf(await pipeline.ExecuteOutcomeAsync(attempt, context, state).ConfigureAwait(false))
                : pipeline.Execute(static (c, s) => ResultOf(s.Attempt(c, s.State).GetAwaiter().GetResult()), context, (Attempt: attempt, State: state));
        }
        catch (Exception e) when (context.Properties.TryGetValue(ShardRetryStrategy.Failure, out var failure)
            && (ReferenceEquals(e, failure) || e is ShardUnavailableException))
        {
            ShardKitLog.CommandFailed(shards.Logger, command.Operation, shards.NameOf(shard), failure.GetType().Name, failure);
            // Our own retries opened the breaker: the failure that made them is the one to report.
            ExceptionDispatchInfo.Throw(failure);
            throw;
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    /// <summary>A pipeline's attempts after one made outside it: the first hands back that attempt's outcome, the rest run.</summary>
    private sealed class ReplayedFirst<TState, TResult>(Outcome<TResult> first, Func<ResilienceContext, TState, ValueTask<Outcome<TResult>>> attempt,
        TState state)
    {
        private bool _replayed;

        public ValueTask<Outcome<TResult>> NextAsync(ResilienceContext context)
        {
            if (_replayed)
            {
                return attempt(context, state);
            }

            _replayed = true;
            return new ValueTask<Outcome<TResult>>(first);
        }
    }

    private static TResult ResultOf<TResult>(Outcome<TResult> outcome)
    {
        outcome.ThrowIfException();
        return outcome.Result!;
    }

    /// <summary>Remembers the failure an attempt recorded on the shard (see <see cref="ExecuteAsync"/>).</summary>
    public static void Failed(ResilienceContext context, Exception error) => context.Properties.Set(ShardRetryStrategy.Failure, error);

    // One attempt on the server the source chooses. A read sent to a standby that turns out to write (an
    // insert … returning run through Query) is refused there with 25006 before it changed anything: it runs again on
    // the primary as the write it is, so read-your-writes remembers it too.
    private static ValueTask<Outcome<TResult>> AttemptAsync<TState, TResult>(ResilienceContext context, ShardSet shards,
        ShardConnectionSource source, int shard, ShardCommand command, TState state,
        Func<NpgsqlConnection, TState, CancellationToken, ValueTask<TResult>> work, bool async, CancellationToken cancellationToken)
    {
        ShardServer server;
        try
        {
            server = source.Choose(shard, command); // per attempt: a standby that failed is not chosen again
        }
        catch (StandbyUnavailableException e)
        {
            return new ValueTask<Outcome<TResult>>(Outcome.FromException<TResult>(e));
        }

        // On the primary the attempt is the call itself, with no frame of its own around it.
        return server.IsPrimary
            ? AttemptOnAsync(context, shards, source, shard, server, command, state, work, async, cancellationToken)
            : AttemptOnStandbyAsync(context, shards, source, shard, server, command, state, work, async, cancellationToken);
    }

    private static async ValueTask<Outcome<TResult>> AttemptOnStandbyAsync<TState, TResult>(ResilienceContext context, ShardSet shards,
        ShardConnectionSource source, int shard, ShardServer server, ShardCommand command, TState state,
        Func<NpgsqlConnection, TState, CancellationToken, ValueTask<TResult>> work, bool async, CancellationToken cancellationToken)
    {
        var outcome = await AttemptOnAsync(context, shards, source, shard, server, command, state, work, async, cancellationToken).ConfigureAwait(false);
        return outcome.Exception switch
        {
            PostgresException { SqlState: PostgresErrorCodes.ReadOnlySqlTransaction } =>
                await OnPrimaryAsync(command with { IsWrite = true }).ConfigureAwait(false),
            // A read of a moving bucket the standby's copy of the fence refused, or could not check as it has not yet
            // replayed its primary's upgrade of the fence (no shardkit.check_owned there): the standby may lag its
            // primary's taking of the bucket. The primary's fence has the last word (it refuses too when the bucket is
            // gone, and only its own lack of the check marks the shard unchecked).
            { } refused when PrimaryDecides(refused) =>
                await OnPrimaryAsync(command).ConfigureAwait(false),
            _ => outcome,
        };

        ValueTask<Outcome<TResult>> OnPrimaryAsync(ShardCommand onPrimary) => OnPrimaryInsteadAsync(context,
            () => AttemptOnAsync(context, shards, source, shard, ShardServer.Primary, onPrimary, state, work, async, cancellationToken));
    }

    /// <summary>
    /// A standby's failed attempt run again on its primary, whose answer replaces the standby's also when its breaker is
    /// open: the standby's error (its lag) must not reach the caller as the shard's own (a missing check there would mark
    /// the shard as read unchecked).
    /// </summary>
    internal static async ValueTask<Outcome<T>> OnPrimaryInsteadAsync<T>(ResilienceContext context, Func<ValueTask<Outcome<T>>> attempt)
    {
        try
        {
            return await attempt().ConfigureAwait(false);
        }
        catch (ShardUnavailableException e)
        {
            Failed(context, e);
            return Outcome.FromException<T>(e);
        }
    }

    /// <summary>
    /// Whether a standby's failure of a read of a moving bucket is its lag, for its primary to decide: the standby's copy
    /// of the fence refused the read, or has no <c>shardkit.check_owned</c> yet (the primary's upgrade not replayed).
    /// </summary>
    internal static bool PrimaryDecides(Exception? error) => ShardBucketMovedException.IsMoved(error) || WriteFence.IsMissingReadCheck(error);

    // One attempt on one server: breaker, slot, timeout, connection, command, classification of a failure.
    private static async ValueTask<Outcome<TResult>> AttemptOnAsync<TState, TResult>(ResilienceContext context, ShardSet shards,
        ShardConnectionSource source, int shard, ShardServer server, ShardCommand command, TState state,
        Func<NpgsqlConnection, TState, CancellationToken, ValueTask<TResult>> work, bool async, CancellationToken cancellationToken)
    {
        using var call = new ShardCall(shards, shard, command, server);
        NpgsqlConnection? connection = null;
        CancellationTokenSource? timeout = null;
        var holdsSlot = false;
        try
        {
            if (source.Admits)
            {
                call.Admit();
            }

            if (command.Slots is { } slots)
            {
                await WaitAsync(slots, async, cancellationToken).ConfigureAwait(false);
                holdsSlot = true;
            }

            call.Start();
            var token = context.CancellationToken; // the caller's, or a token a strategy of the pipeline links to it
            if (command.Timeout is { } limit)
            {
                timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
                timeout.CancelAfter(limit); // from the shard's start, not from its wait for a slot
                token = timeout.Token;
            }

            connection = await source.OpenAsync(shards, shard, server, command.CarriesSetup, async, token).ConfigureAwait(false);
            var backend = token.CanBeCanceled ? BackendCancel.IdOf(connection) : 0;
            try
            {
                var result = await work(connection, state, token).ConfigureAwait(false);
                await source.WroteAsync(shard, command, connection, async, token).ConfigureAwait(false);
                call.Completed();
                return Outcome.FromResult(result);
            }
            catch (Exception) when (token.IsCancellationRequested && backend != 0 && connection.State != System.Data.ConnectionState.Open)
            {
                // Cancelled, and Npgsql gave up on the connection: the server dropped its cancel request (it reached the
                // backend before the query did), and the query would run on to its end there. Cancelled again by its id.
                await BackendCancel.SendAsync(shards, shard, server, backend, LostCancelBound).ConfigureAwait(false);
                throw;
            }
            finally
            {
                await source.ReleaseAsync(connection, async).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is not ShardKitException && !cancellationToken.IsCancellationRequested)
        {
            var error = call.Failed(Classify(shards, source, shard, command, e, timeout), opening: connection is null);
            Failed(context, error);
            return Outcome.FromException<TResult>(error);
        }
        finally
        {
            timeout?.Dispose();
            if (holdsSlot)
            {
                command.Slots!.Release();
            }
        }
    }

    // How long the second cancel of a query whose first one the server dropped may take.
    private static readonly TimeSpan LostCancelBound = TimeSpan.FromSeconds(1);

    // A per-shard timeout that fired is the shard's timeout; an error a transaction gives a meaning to takes that meaning.
    private static Exception Classify(ShardSet shards, ShardConnectionSource source, int shard, in ShardCommand command, Exception error,
        CancellationTokenSource? timeout)
    {
        if (error is OperationCanceledException && timeout is { IsCancellationRequested: true })
        {
            return new ShardTimeoutException(shards.NameOf(shard), command.Timeout!.Value, overall: false);
        }

        return error is PostgresException server && source.Translate(shard, server) is { } translated ? translated : error;
    }

    private static ValueTask WaitAsync(SemaphoreSlim slots, bool async, CancellationToken cancellationToken)
    {
        if (async)
        {
            return new ValueTask(slots.WaitAsync(cancellationToken));
        }

        slots.Wait(cancellationToken);
        return ValueTask.CompletedTask;
    }
}

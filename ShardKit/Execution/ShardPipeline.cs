using System.Runtime.ExceptionServices;
using Npgsql;

namespace ShardKit;

/// <summary>
/// The one way a command reaches a shard, whatever the path (routed, fan-out, batch, two-phase steps, recovery):
/// breaker → slot → timeout → connection → command → one classification of a failure → span and duration → another
/// attempt where safe. A concern that belongs to every command is added here, once. Streams, whose rows outlive one
/// call, take the same steps through <see cref="ShardCall"/> and <see cref="ShouldRetry"/>.
/// </summary>
internal static class ShardPipeline
{
    /// <summary>
    /// Runs <paramref name="work"/> on <paramref name="shard"/>. With <paramref name="async"/> false every step runs
    /// synchronously and the returned task is already complete (the synchronous API's path, with no blocking on
    /// async work). Errors ShardKit raises itself pass through unchanged; caller cancellation passes through unrecorded.
    /// The state argument lets callers pass a static lambda, so the hot path captures nothing.
    /// </summary>
    public static async ValueTask<TResult> RunAsync<TState, TResult>(ShardSet shards, ShardConnectionSource source, int shard,
        ShardCommand command, TState state, Func<NpgsqlConnection, TState, CancellationToken, ValueTask<TResult>> work, bool async,
        CancellationToken cancellationToken)
    {
        Exception? previous = null;
        for (var attempt = 0; ; attempt++)
        {
            TimeSpan delay;
            using (var call = new ShardCall(shards, shard, command))
            {
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
                    var token = cancellationToken;
                    if (command.Timeout is { } limit)
                    {
                        timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                        timeout.CancelAfter(limit); // from the shard's start, not from its wait for a slot
                        token = timeout.Token;
                    }

                    connection = await source.OpenAsync(shards, shard, async, token).ConfigureAwait(false);
                    try
                    {
                        var result = await work(connection, state, token).ConfigureAwait(false);
                        call.Completed();
                        return result;
                    }
                    finally
                    {
                        await source.ReleaseAsync(connection, async).ConfigureAwait(false);
                    }
                }
                catch (ShardUnavailableException) when (previous is not null)
                {
                    // Our own retries opened the breaker: the failure that made them is the one to report.
                    ExceptionDispatchInfo.Throw(previous);
                    throw;
                }
                catch (Exception e) when (e is not ShardKitException && !cancellationToken.IsCancellationRequested)
                {
                    var error = Classify(shards, source, shard, command, e, timeout);
                    error = call.Failed(error, opening: connection is null);
                    if (!ShouldRetry(shards, source, shard, command, error, attempt, out delay))
                    {
                        if (ReferenceEquals(error, e))
                        {
                            throw;
                        }

                        throw error;
                    }

                    previous = error;
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

            await DelayAsync(shards.Settings.Time, delay, async, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Whether a failed attempt is tried again (with the delay before it): a transient failure, attempts left, and a
    /// command that may run twice (a read, or a write the retry options allow; never inside a transaction). Logs and
    /// counts the decision either way.
    /// </summary>
    public static bool ShouldRetry(ShardSet shards, ShardConnectionSource source, int shard, in ShardCommand command, Exception error,
        int attempt, out TimeSpan delay)
    {
        var retries = source.Retries(shards);
        var maxRetries = source.MayRetry && !command.Once && (!command.IsWrite || retries.RetryWrites) ? retries.MaxRetries : 0;
        var name = shards.NameOf(shard);
        delay = default;
        if (attempt >= maxRetries || !ShardErrors.IsTransient(error))
        {
            ShardKitLog.CommandFailed(shards.Logger, command.Operation, name, error.GetType().Name, error);
            return false;
        }

        delay = retries.DelayBefore(attempt + 1);
        ShardKitTelemetry.Retries.Add(1, new KeyValuePair<string, object?>(ShardKitTelemetry.ShardTag, name));
        ShardKitLog.Retrying(shards.Logger, command.Operation, name, attempt + 1, maxRetries, (long)delay.TotalMilliseconds);
        return true;
    }

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

    private static ValueTask DelayAsync(TimeProvider time, TimeSpan delay, bool async, CancellationToken cancellationToken)
    {
        var wait = Task.Delay(delay, time, cancellationToken);
        if (async)
        {
            return new ValueTask(wait);
        }

        wait.GetAwaiter().GetResult();
        return ValueTask.CompletedTask;
    }
}

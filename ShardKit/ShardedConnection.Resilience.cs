using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using Npgsql;

namespace ShardKit;

public sealed partial class ShardedConnection
{
    /// <summary>
    /// How this connection retries transient failures; starts as the data source's setting. Set
    /// <c>Retries = Retries with { RetryWrites = true }</c> around idempotent writes, or <see cref="ShardRetryOptions.None"/>.
    /// </summary>
    public ShardRetryOptions Retries
    {
        get => Session.Retries;
        set => Session.Retries = value;
    }

    /// <summary>Runs one command on one shard of this connection's session, through the shard pipeline.</summary>
    internal ValueTask<TResult> RunOnShardAsync<TState, TResult>(int shard, string operation, string? sql, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, Task<TResult>> work, CancellationToken cancellationToken) =>
        ShardPipeline.RunAsync(Session.Shards, ShardConnectionSource.Of(Session), shard, ShardCommand.For(operation, sql, isWrite),
            (State: state, Work: work), static (c, s, _) => new ValueTask<TResult>(s.Work(c, s.State)), async: true, cancellationToken);

    /// <summary>The synchronous twin of <see cref="RunOnShardAsync"/>: the same pipeline, every step synchronous.</summary>
    internal TResult RunOnShard<TState, TResult>(int shard, string operation, string? sql, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, TResult> work) =>
        ShardPipeline.RunAsync(Session.Shards, ShardConnectionSource.Of(Session), shard, ShardCommand.For(operation, sql, isWrite),
            (State: state, Work: work), static (c, s, _) => new ValueTask<TResult>(s.Work(c, s.State)), async: false,
            CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>
    /// Streams one query's rows from one shard: the pipeline's steps (breaker, connection, span, one classification of
    /// a failure), and another attempt where safe only until the first row reaches the caller. The shard's first answer
    /// settles a probe; a stream stopped or cancelled before it frees the probe.
    /// </summary>
    internal async IAsyncEnumerable<T> StreamOnShardAsync<TState, T>(int shard, string operation, string? sql, TState state,
        Func<NpgsqlConnection, TState, IAsyncEnumerable<T>> query, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var shards = Session.Shards;
        var source = ShardConnectionSource.Of(Session);
        var command = ShardCommand.For(operation, sql, isWrite: false);
        Exception? previous = null;
        for (var attempt = 0; ; attempt++)
        {
            using var call = new ShardCall(shards, shard, command);
            NpgsqlConnection? connection = null;
            IAsyncEnumerator<T>? rows = null;
            var delivered = false;
            TimeSpan delay = default;
            try
            {
                while (true)
                {
                    try
                    {
                        if (rows is null)
                        {
                            call.Admit();
                            call.Start();
                            connection = await Session.OpenAsync(shard, cancellationToken).ConfigureAwait(false);
                            rows = query(connection, state).GetAsyncEnumerator(cancellationToken);
                        }

                        if (!await rows.MoveNextAsync().ConfigureAwait(false))
                        {
                            call.Completed(); // an empty result is an answer too
                            yield break;
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
                        var error = call.Failed(e, opening: connection is null);
                        if (delivered || !ShardPipeline.ShouldRetry(shards, source, shard, command, error, attempt, out delay))
                        {
                            if (ReferenceEquals(error, e))
                            {
                                throw;
                            }

                            throw error;
                        }

                        previous = error;
                        break; // nothing reached the caller yet: try again
                    }

                    call.Answered(); // the shard answered, whether or not the caller reads on
                    delivered = true;
                    yield return rows.Current;
                }
            }
            finally
            {
                if (rows is not null)
                {
                    await rows.DisposeAsync().ConfigureAwait(false);
                }
            }

            await Task.Delay(delay, shards.Settings.Time, cancellationToken).ConfigureAwait(false);
        }
    }
}

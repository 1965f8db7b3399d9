using System.Runtime.CompilerServices;
using Npgsql;
using Polly;

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

    /// <summary>
    /// Runs one command on one shard of this connection's session, through the shard pipeline; a read follows
    /// <paramref name="readPolicy"/>, or the connection's <see cref="ReadPolicy"/> when null.
    /// </summary>
    internal ValueTask<TResult> RunOnShardAsync<TState, TResult>(int shard, string operation, string? sql, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, Task<TResult>> work, CancellationToken cancellationToken, ReadPolicy? readPolicy = null,
        bool carriesSetup = false) =>
        ShardPipeline.RunAsync(Session.Shards, ShardConnectionSource.Of(Session, readPolicy), shard,
            ShardCommand.For(operation, sql, isWrite) with { CarriesSetup = carriesSetup },
            (State: state, Work: work), static (c, s, _) => new ValueTask<TResult>(s.Work(c, s.State)), async: true, cancellationToken);

    /// <summary>The synchronous twin of <see cref="RunOnShardAsync"/>: the same pipeline, every step synchronous.</summary>
    internal TResult RunOnShard<TState, TResult>(int shard, string operation, string? sql, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, TResult> work, ReadPolicy? readPolicy = null) =>
        ShardPipeline.RunAsync(Session.Shards, ShardConnectionSource.Of(Session, readPolicy), shard, ShardCommand.For(operation, sql, isWrite),
            (State: state, Work: work), static (c, s, _) => new ValueTask<TResult>(s.Work(c, s.State)), async: false,
            CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>
    /// Streams one query's rows from one shard: the pipeline's steps (breaker, connection, span, one classification of
    /// a failure), and another attempt where safe only until the first row reaches the caller (the start runs through the
    /// shard's pipeline). The shard's first answer settles a probe; a stream stopped or cancelled before it frees the probe.
    /// </summary>
    internal async IAsyncEnumerable<T> StreamOnShardAsync<TState, T>(int shard, string operation, string? sql, TState state,
        Func<NpgsqlConnection, TState, IAsyncEnumerable<T>> query, [EnumeratorCancellation] CancellationToken cancellationToken,
        ReadPolicy? readPolicy = null)
    {
        var command = ShardCommand.For(operation, sql, isWrite: false);
        var (call, rows, any) = await ShardPipeline.ExecuteAsync(Session.Shards, ShardConnectionSource.Of(Session), shard, command,
            (Db: this, Shard: shard, Command: command, State: state, Query: query, Token: cancellationToken, Policy: readPolicy),
            static (context, s) => s.Db.StartStreamAsync(context, s.Shard, s.Command, s.State, s.Query, s.Policy, s.Token), async: true,
            cancellationToken).ConfigureAwait(false);
        using (call)
        {
            try
            {
                if (!any)
                {
                    yield break; // an empty result is an answer too: the start completed the call
                }

                call.Answered(); // the shard answered, whether or not the caller reads on
                do
                {
                    yield return rows.Current;
                }
                while (await NextRowAsync(call, rows, cancellationToken).ConfigureAwait(false));

                call.Completed();
            }
            finally
            {
                await rows.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    // One attempt at a stream's start: breaker, connection, the query, its first row. On success the call and the rows
    // belong to the caller; on failure both are closed here.
    private async ValueTask<Outcome<(ShardCall Call, IAsyncEnumerator<T> Rows, bool Any)>> StartStreamAsync<TState, T>(ResilienceContext context,
        int shard, ShardCommand command, TState state, Func<NpgsqlConnection, TState, IAsyncEnumerable<T>> query, ReadPolicy? readPolicy,
        CancellationToken cancellationToken)
    {
        var server = Session.Choose(shard, isWrite: false, readPolicy);
        var outcome = await StartStreamOnAsync(context, shard, server, command, state, query, cancellationToken).ConfigureAwait(false);
        // A standby's copy of the fence may lag its primary's taking of a moving bucket, or its upgrade (no check_owned
        // replayed yet): the primary has the last word.
        if (server.IsPrimary || !ShardPipeline.PrimaryDecides(outcome.Exception))
        {
            return outcome;
        }

        return await ShardPipeline.OnPrimaryInsteadAsync(context,
            () => StartStreamOnAsync(context, shard, ShardServer.Primary, command, state, query, cancellationToken)).ConfigureAwait(false);
    }

    private async ValueTask<Outcome<(ShardCall Call, IAsyncEnumerator<T> Rows, bool Any)>> StartStreamOnAsync<TState, T>(ResilienceContext context,
        int shard, ShardServer server, ShardCommand command, TState state, Func<NpgsqlConnection, TState, IAsyncEnumerable<T>> query,
        CancellationToken cancellationToken)
    {
        var call = new ShardCall(Session.Shards, shard, command, server);
        NpgsqlConnection? connection = null;
        IAsyncEnumerator<T>? rows = null;
        try
        {
            call.Admit();
            call.Start();
            connection = await Session.OpenAsync(shard, server, cancellationToken).ConfigureAwait(false);
            rows = query(connection, state).GetAsyncEnumerator(cancellationToken);
            var any = await rows.MoveNextAsync().ConfigureAwait(false);
            if (!any)
            {
                call.Completed();
            }

            return Outcome.FromResult((call, rows, any));
        }
        catch (Exception e) when (e is not ShardKitException && !cancellationToken.IsCancellationRequested)
        {
            var error = call.Failed(e, opening: connection is null);
            ShardPipeline.Failed(context, error);
            await CloseAsync(call, rows).ConfigureAwait(false);
            return Outcome.FromException<(ShardCall, IAsyncEnumerator<T>, bool)>(error);
        }
        catch
        {
            await CloseAsync(call, rows).ConfigureAwait(false);
            throw;
        }
    }

    // A failure after rows reached the caller is the shard's, and is not tried again.
    private static async ValueTask<bool> NextRowAsync<T>(ShardCall call, IAsyncEnumerator<T> rows, CancellationToken cancellationToken)
    {
        try
        {
            return await rows.MoveNextAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is not ShardKitException && !cancellationToken.IsCancellationRequested)
        {
            var error = call.Failed(e, opening: false);
            if (ReferenceEquals(error, e))
            {
                throw;
            }

            throw error;
        }
    }

    private static async ValueTask CloseAsync<T>(ShardCall call, IAsyncEnumerator<T>? rows)
    {
        call.Dispose();
        if (rows is not null)
        {
            await rows.DisposeAsync().ConfigureAwait(false);
        }
    }
}

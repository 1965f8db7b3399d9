using System.Diagnostics;
using System.Runtime.CompilerServices;
using Npgsql;

namespace ShardKit;

public sealed partial class ShardedConnection
{
    private ShardRetryOptions? _retries;

    /// <summary>
    /// How this connection retries transient failures; starts as the data source's setting. Set
    /// <c>Retries = Retries with { RetryWrites = true }</c> around idempotent writes, or <see cref="ShardRetryOptions.None"/>.
    /// </summary>
    public ShardRetryOptions Retries
    {
        get => _retries ?? DataSource.Settings.Retries;
        set => _retries = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>
    /// Runs one command on one shard: the shard's breaker first, then the work with a span, a duration measurement,
    /// and retries of transient failures where safe (a read, or a write the caller marked idempotent; never inside a
    /// transaction). A connection failure surfaces as <see cref="ShardConnectionException"/>; other errors keep their type
    /// and carry the shard in <see cref="Exception.Data"/>. The state argument lets callers pass a static lambda, so
    /// the hot path captures nothing.
    /// </summary>
    internal async Task<TResult> RunOnShardAsync<TState, TResult>(int shard, string operation, string? sql, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, Task<TResult>> work, CancellationToken cancellationToken)
    {
        var breaker = DataSource.BreakerAt(shard);
        var command = ShardKitTelemetry.Summarize(sql);
        var maxRetries = MaxRetriesFor(isWrite);
        for (var attempt = 0; ; attempt++)
        {
            var probe = breaker.ThrowIfOpen();
            using var activity = ShardKitTelemetry.StartCommand(operation, DataSource.Map.Shards[shard], command);
            var started = Stopwatch.GetTimestamp();
            NpgsqlConnection? connection = null;
            TimeSpan delay;
            try
            {
                connection = await OpenShardAsync(shard, cancellationToken).ConfigureAwait(false);
                var result = await work(connection, state).ConfigureAwait(false);
                probe = false;
                breaker.OnSuccess();
                ShardKitTelemetry.RecordDuration(DataSource.Map.ShardNames[shard], command, started);
                return result;
            }
            catch (PostgresException e) when (IsDistributedLockTimeout(e))
            {
                ShardKitTelemetry.RecordError(activity, e);
                ShardKitTelemetry.RecordDuration(DataSource.Map.ShardNames[shard], command, started, e);
                throw DistributedLockTimeout(shard, e);
            }
            catch (Exception e) when (e is not ShardKitException && !cancellationToken.IsCancellationRequested)
            {
                probe = false; // the failure settles it: a connection failure opens the breaker again, anything else frees it
                var error = ShardErrors.ForShard(e, DataSource.Map.Shards[shard], opening: connection is null);
                if (!OnShardFailure(shard, operation, command, started, error, activity, attempt, maxRetries, out delay))
                {
                    if (ReferenceEquals(error, e))
                    {
                        throw;
                    }

                    throw error;
                }
            }
            finally
            {
                if (probe)
                {
                    breaker.ReleaseProbe(); // cancelled, or refused by ShardKit, before the shard answered: proves nothing
                }
            }

            await Task.Delay(delay, DataSource.Settings.Time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The synchronous twin of <see cref="RunOnShardAsync"/>.</summary>
    internal TResult RunOnShard<TState, TResult>(int shard, string operation, string? sql, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, TResult> work)
    {
        var breaker = DataSource.BreakerAt(shard);
        var command = ShardKitTelemetry.Summarize(sql);
        var maxRetries = MaxRetriesFor(isWrite);
        for (var attempt = 0; ; attempt++)
        {
            var probe = breaker.ThrowIfOpen();
            using var activity = ShardKitTelemetry.StartCommand(operation, DataSource.Map.Shards[shard], command);
            var started = Stopwatch.GetTimestamp();
            NpgsqlConnection? connection = null;
            TimeSpan delay;
            try
            {
                connection = OpenShard(shard);
                var result = work(connection, state);
                probe = false;
                breaker.OnSuccess();
                ShardKitTelemetry.RecordDuration(DataSource.Map.ShardNames[shard], command, started);
                return result;
            }
            catch (PostgresException e) when (IsDistributedLockTimeout(e))
            {
                ShardKitTelemetry.RecordError(activity, e);
                ShardKitTelemetry.RecordDuration(DataSource.Map.ShardNames[shard], command, started, e);
                throw DistributedLockTimeout(shard, e);
            }
            catch (Exception e) when (e is not ShardKitException)
            {
                probe = false;
                var error = ShardErrors.ForShard(e, DataSource.Map.Shards[shard], opening: connection is null);
                if (!OnShardFailure(shard, operation, command, started, error, activity, attempt, maxRetries, out delay))
                {
                    if (ReferenceEquals(error, e))
                    {
                        throw;
                    }

                    throw error;
                }
            }
            finally
            {
                if (probe)
                {
                    breaker.ReleaseProbe();
                }
            }

            Task.Delay(delay, DataSource.Settings.Time).GetAwaiter().GetResult();
        }
    }

    /// <summary>
    /// Streams one query's rows from one shard, with the same breaker, span and error shaping as
    /// <see cref="RunOnShardAsync"/> but no retry (rows may already be with the caller). The shard's first answer
    /// settles a probe; a stream stopped or cancelled before it frees the probe.
    /// </summary>
    internal async IAsyncEnumerable<T> StreamOnShardAsync<TState, T>(int shard, string operation, string? sql, TState state,
        Func<NpgsqlConnection, TState, IAsyncEnumerable<T>> query, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var breaker = DataSource.BreakerAt(shard);
        var probe = breaker.ThrowIfOpen();
        var command = ShardKitTelemetry.Summarize(sql);
        using var activity = ShardKitTelemetry.StartCommand(operation, DataSource.Map.Shards[shard], command);
        var started = Stopwatch.GetTimestamp();
        NpgsqlConnection? connection = null;
        IAsyncEnumerator<T>? rows = null;
        var answered = false;
        try
        {
            while (true)
            {
                try
                {
                    if (rows is null)
                    {
                        connection = await OpenShardAsync(shard, cancellationToken).ConfigureAwait(false);
                        rows = query(connection, state).GetAsyncEnumerator(cancellationToken);
                    }

                    if (!await rows.MoveNextAsync().ConfigureAwait(false))
                    {
                        break;
                    }
                }
                catch (Exception e) when (e is not ShardKitException && !cancellationToken.IsCancellationRequested)
                {
                    probe = false;
                    var error = ShardErrors.ForShard(e, DataSource.Map.Shards[shard], opening: connection is null);
                    OnShardFailure(shard, operation, command, started, error, activity, attempt: 0, maxRetries: 0, out _);
                    if (ReferenceEquals(error, e))
                    {
                        throw;
                    }

                    throw error;
                }

                if (!answered)
                {
                    answered = true;
                    probe = false;
                    breaker.OnSuccess(); // the shard answered, whether or not the caller reads on
                }

                yield return rows.Current;
            }

            if (!answered)
            {
                probe = false;
                breaker.OnSuccess(); // an empty result is an answer too
            }

            ShardKitTelemetry.RecordDuration(DataSource.Map.ShardNames[shard], command, started);
        }
        finally
        {
            if (probe)
            {
                breaker.ReleaseProbe();
            }

            if (rows is not null)
            {
                await rows.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private int MaxRetriesFor(bool isWrite)
    {
        var retries = Retries;
        return _transaction is null && _distributed is null && (!isWrite || retries.RetryWrites) ? retries.MaxRetries : 0;
    }

    // Records the failure everywhere it counts; true (with a delay) when the command should be tried again.
    private bool OnShardFailure(int shard, string operation, CommandSummary command, long started, Exception error, Activity? activity,
        int attempt, int maxRetries, out TimeSpan delay)
    {
        var name = DataSource.Map.ShardNames[shard];
        DataSource.BreakerAt(shard).OnFailure(error);
        ShardKitTelemetry.RecordError(activity, error);
        ShardKitTelemetry.RecordDuration(name, command, started, error);
        ShardKitTelemetry.RecordFailure(name, error);
        delay = default;
        if (attempt >= maxRetries || !ShardErrors.IsTransient(error))
        {
            ShardKitLog.CommandFailed(DataSource.Logger, operation, name, error.GetType().Name, error);
            return false;
        }

        delay = Retries.DelayBefore(attempt + 1);
        ShardKitTelemetry.Retries.Add(1, new KeyValuePair<string, object?>(ShardKitTelemetry.ShardTag, name));
        ShardKitLog.Retrying(DataSource.Logger, operation, name, attempt + 1, maxRetries, (long)delay.TotalMilliseconds);
        return true;
    }
}

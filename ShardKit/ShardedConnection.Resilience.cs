using System.Diagnostics;
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
    /// transaction). The state argument lets callers pass a static lambda, so the hot path captures nothing.
    /// </summary>
    internal async Task<TResult> RunOnShardAsync<TState, TResult>(int shard, string operation, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, Task<TResult>> work, CancellationToken cancellationToken)
    {
        var breaker = DataSource.BreakerAt(shard);
        var retries = Retries;
        var maxRetries = _transaction is null && _distributed is null && (!isWrite || retries.RetryWrites) ? retries.MaxRetries : 0;
        for (var attempt = 0; ; attempt++)
        {
            breaker.ThrowIfOpen();
            using var activity = ShardKitTelemetry.StartCommand(operation, DataSource.Map.ShardNames[shard]);
            var started = Stopwatch.GetTimestamp();
            try
            {
                var connection = await OpenShardAsync(shard, cancellationToken).ConfigureAwait(false);
                var result = await work(connection, state).ConfigureAwait(false);
                breaker.OnSuccess();
                RecordDuration(shard, operation, started);
                return result;
            }
            catch (PostgresException e) when (IsDistributedLockTimeout(e))
            {
                ShardKitTelemetry.RecordError(activity, e);
                throw DistributedLockTimeout(shard, e);
            }
            catch (Exception e) when (e is not ShardKitException && !cancellationToken.IsCancellationRequested)
            {
                if (!OnShardFailure(shard, operation, e, activity, attempt, maxRetries, out var delay))
                {
                    throw;
                }

                await Task.Delay(delay, DataSource.Settings.Time, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>The synchronous twin of <see cref="RunOnShardAsync"/>.</summary>
    internal TResult RunOnShard<TState, TResult>(int shard, string operation, bool isWrite, TState state,
        Func<NpgsqlConnection, TState, TResult> work)
    {
        var breaker = DataSource.BreakerAt(shard);
        var retries = Retries;
        var maxRetries = _transaction is null && _distributed is null && (!isWrite || retries.RetryWrites) ? retries.MaxRetries : 0;
        for (var attempt = 0; ; attempt++)
        {
            breaker.ThrowIfOpen();
            using var activity = ShardKitTelemetry.StartCommand(operation, DataSource.Map.ShardNames[shard]);
            var started = Stopwatch.GetTimestamp();
            try
            {
                var result = work(OpenShard(shard), state);
                breaker.OnSuccess();
                RecordDuration(shard, operation, started);
                return result;
            }
            catch (PostgresException e) when (IsDistributedLockTimeout(e))
            {
                ShardKitTelemetry.RecordError(activity, e);
                throw DistributedLockTimeout(shard, e);
            }
            catch (Exception e) when (e is not ShardKitException)
            {
                if (!OnShardFailure(shard, operation, e, activity, attempt, maxRetries, out var delay))
                {
                    throw;
                }

                Task.Delay(delay, DataSource.Settings.Time).GetAwaiter().GetResult();
            }
        }
    }

    // Records the failure everywhere it counts; true (with a delay) when the command should be tried again.
    private bool OnShardFailure(int shard, string operation, Exception error, Activity? activity, int attempt, int maxRetries, out TimeSpan delay)
    {
        var name = DataSource.Map.ShardNames[shard];
        DataSource.BreakerAt(shard).OnFailure(error);
        ShardKitTelemetry.RecordError(activity, error);
        ShardKitTelemetry.Failures.Add(1, new KeyValuePair<string, object?>(ShardKitTelemetry.ShardTag, name));
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

    private void RecordDuration(int shard, string operation, long started)
    {
        if (ShardKitTelemetry.OperationDuration.Enabled)
        {
            ShardKitTelemetry.OperationDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds,
                new KeyValuePair<string, object?>(ShardKitTelemetry.ShardTag, DataSource.Map.ShardNames[shard]),
                new KeyValuePair<string, object?>(ShardKitTelemetry.OperationName, operation));
        }
    }
}

using Microsoft.Extensions.Logging;
using Polly;
using Polly.Retry;

namespace ShardKit;

/// <summary>
/// ShardKit's retry as a Polly.Core retry strategy, one per shard's pipeline. The pipeline is built once per shard while a
/// connection may change its <see cref="ShardRetryOptions"/> at any time, so each call carries its options in the
/// <see cref="ResilienceContext"/>: the strategy tries a transient failure again while the call's retries last, waits the
/// options' backoff on the pipeline's <see cref="TimeProvider"/>, and logs and counts each retry.
/// </summary>
internal static class ShardRetryStrategy
{
    /// <summary>The retry options of the call (the connection's, or the data source's).</summary>
    public static readonly ResiliencePropertyKey<ShardRetryOptions> Options = new("ShardKit.Retries");

    /// <summary>The call's operation, for the retry log.</summary>
    public static readonly ResiliencePropertyKey<string> Operation = new("ShardKit.Operation");

    /// <summary>The latest failure an attempt of the call recorded on the shard (the one to report when retries end).</summary>
    public static readonly ResiliencePropertyKey<Exception> Failure = new("ShardKit.Failure");

    public static ResiliencePipelineBuilder AddShardRetry(this ResiliencePipelineBuilder builder, string shard, ILogger logger) =>
        builder.AddRetry(new RetryStrategyOptions
        {
            Name = "ShardKit.Retry",
            MaxRetryAttempts = int.MaxValue, // bounded per call by ShouldHandle: the call's options say how many
            ShouldHandle = static args => new ValueTask<bool>(args.Outcome.Exception is { } error
                && args.AttemptNumber < OptionsOf(args.Context).MaxRetries && ShardErrors.IsTransient(error)),
            DelayGenerator = static args => new ValueTask<TimeSpan?>(OptionsOf(args.Context).DelayBefore(args.AttemptNumber + 1)),
            OnRetry = args =>
            {
                ShardKitTelemetry.Retries.Add(1, new KeyValuePair<string, object?>(ShardKitTelemetry.ShardTag, shard));
                ShardKitLog.Retrying(logger, args.Context.Properties.GetValue(Operation, "command"), shard, args.AttemptNumber + 1,
                    OptionsOf(args.Context).MaxRetries, (long)args.RetryDelay.TotalMilliseconds);
                return default;
            },
        });

    private static ShardRetryOptions OptionsOf(ResilienceContext context) => context.Properties.GetValue(Options, ShardRetryOptions.None);
}

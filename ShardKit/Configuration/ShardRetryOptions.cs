namespace ShardKit;

/// <summary>
/// Retries of transient failures (<see cref="Npgsql.NpgsqlException.IsTransient"/>): bounded exponential backoff with
/// jitter, waited on the data source's <see cref="TimeProvider"/> by ShardKit's retry strategy on each shard's Polly.Core
/// pipeline. Reads are retried; writes only when <see cref="RetryWrites"/> says the caller made them idempotent. Nothing
/// is retried inside a transaction. With <c>UseResilience</c> your own strategies decide the attempts and delays;
/// <see cref="RetryWrites"/> and <see cref="MaxRetries"/> 0 (no retries) still apply.
/// </summary>
public sealed record ShardRetryOptions
{
    /// <summary>Two retries of reads, 50 ms base delay, at most 1 s; writes never.</summary>
    public static ShardRetryOptions Default { get; } = new();

    /// <summary>No retries at all.</summary>
    public static ShardRetryOptions None { get; } = new() { MaxRetries = 0 };

    /// <summary>Retries after the first attempt (0 disables retrying).</summary>
    public int MaxRetries { get; init; } = 2;

    /// <summary>The delay before the first retry; each later one doubles it, plus up to 50% jitter.</summary>
    public TimeSpan BaseDelay { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>The longest delay between two attempts.</summary>
    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Also retry writes (<c>Execute</c>); set it only for statements that are safe to run twice.</summary>
    public bool RetryWrites { get; init; }

    internal TimeSpan DelayBefore(int retry)
    {
        var exponential = BaseDelay.TotalMilliseconds * Math.Pow(2, retry - 1);
        var jittered = exponential * (1 + (Random.Shared.NextDouble() * 0.5));
        return TimeSpan.FromMilliseconds(Math.Min(jittered, MaxDelay.TotalMilliseconds));
    }
}

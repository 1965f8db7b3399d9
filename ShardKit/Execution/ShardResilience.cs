namespace ShardKit;

/// <summary>
/// ShardKit's classification of failures, for strategies you add to a shard's pipeline with
/// <see cref="ShardedDataSourceBuilder.UseResilience"/>:
/// <c>ShouldHandle = new PredicateBuilder().Handle&lt;Exception&gt;(ShardResilience.IsTransient)</c>.
/// </summary>
public static class ShardResilience
{
    /// <summary>
    /// Whether <paramref name="error"/> is worth another attempt, as ShardKit's own retry decides: a connection failure
    /// (<see cref="ShardConnectionException"/>), or a server error PostgreSQL marks transient (serialization failure 40001,
    /// deadlock 40P01…). A command timeout, a refusal by an open breaker (<see cref="ShardUnavailableException"/>), a
    /// cancellation and every other error are not.
    /// </summary>
    public static bool IsTransient(Exception error)
    {
        ArgumentNullException.ThrowIfNull(error);
        return ShardErrors.IsTransient(error);
    }
}

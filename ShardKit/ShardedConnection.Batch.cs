using Dapper;
using Npgsql;

namespace ShardKit;

public sealed partial class ShardedConnection
{
    /// <summary>
    /// Runs <paramref name="sql"/> once per item, each item on the shard its <c>[ShardKey]</c> names: the items are
    /// grouped by shard and the groups run in parallel. With <paramref name="transactionPerShard"/> (the default)
    /// each shard's group runs in a transaction and no shard commits before every group has run: a failing item on
    /// any shard rolls back every shard and <see cref="BroadcastWriteException"/> names the shard. Only a failure
    /// during the commits themselves (a shard lost at that instant) can leave some shards committed: the exception
    /// then lists the shards that committed, rolled back, or are in doubt; when that matters, use the distributed
    /// transaction. Without transactions every shard runs its whole group even when another fails (the items
    /// written stay written) and the failures are thrown at the end, with the shards that applied their group.
    /// </summary>
    /// <returns>The affected rows per shard and in total.</returns>
    public async Task<BroadcastResult> ExecuteBatchAsync<T>(string sql, IEnumerable<T> items, bool transactionPerShard = true,
        int? commandTimeout = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sql);
        ArgumentNullException.ThrowIfNull(items);
        var groups = GroupByShard(items);
        if (groups.Count == 0)
        {
            return new BroadcastResult(new Dictionary<string, int>(), []);
        }

        using var activity = ShardKitTelemetry.StartFanOut("ExecuteBatch", groups.Count, "affected-rows");
        // Without transactions a cancelled shard would stop at an arbitrary item: every shard runs its whole group instead.
        var options = transactionPerShard ? FanOutOptions.Default : new FanOutOptions { Policy = FanOutPolicy.PartialResults };
        using var run = new FanOutRun(this, groups.Keys.Order().ToArray(), options, "ExecuteBatch", sql, cancellationToken);
        // Inside a distributed transaction the shards' connections are enlisted already: the batch commits with it.
        var barrier = transactionPerShard && _distributed is null ? new CommitBarrier(groups.Count) : null;
        // Outside a distributed transaction a shard keeps its group once its commit (or, without transactions, its
        // first item) is sent: the run marks that, so a failure can say what each shard kept.
        var outcome = _distributed is null ? run : null;
        var results = await run.SettleEachAsync((shard, connection, token) =>
            RunGroupAsync(connection, sql, groups[shard], barrier, commandTimeout, () => outcome?.MarkSent(shard), token)).ConfigureAwait(false);
        return run.Failures.Count == 0
            ? new BroadcastResult(results.ToDictionary(r => run.NameOf(r.Shard), r => r.Result), run.Failures)
            : throw run.WriteFailure(results, committed: barrier is not null, atomic: transactionPerShard);
    }

    private Dictionary<int, List<T>> GroupByShard<T>(IEnumerable<T> items)
    {
        ShardKeyAccessor<T>.EnsureKey();

        var groups = new Dictionary<int, List<T>>();
        var index = 0;
        foreach (var item in items)
        {
            if (item is null)
            {
                throw new ShardRoutingException($"Item {index} of the batch is null; remove it. Nothing was written.");
            }

            var shard = DataSource.Map.Strategy.ShardOf(ShardKeyAccessor<T>.Read(item));
            if (!groups.TryGetValue(shard, out var group))
            {
                groups[shard] = group = [];
            }

            group.Add(item);
            index++;
        }

        return groups;
    }

    private static async Task<int> RunGroupAsync<T>(NpgsqlConnection connection, string sql, List<T> group, CommitBarrier? barrier,
        int? commandTimeout, Action markSent, CancellationToken token)
    {
        var transaction = barrier is not null ? await connection.BeginTransactionAsync(token).ConfigureAwait(false) : null;
        try
        {
            if (transaction is null)
            {
                markSent();
            }

            var affected = await connection.ExecuteAsync(
                new CommandDefinition(sql, group, transaction, commandTimeout, cancellationToken: token)).ConfigureAwait(false);
            if (transaction is not null)
            {
                // A failure elsewhere cancels the token while this shard waits, and its transaction rolls back.
                await barrier!.ArriveAndWaitAsync(token).ConfigureAwait(false);
                // Past the barrier every shard commits: cancelling one now would only split the batch further.
                markSent();
                await transaction.CommitAsync(CancellationToken.None).ConfigureAwait(false);
            }

            return affected;
        }
        finally
        {
            if (transaction is not null)
            {
                await transaction.DisposeAsync().ConfigureAwait(false);
            }
        }
    }
}

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
    /// Each shard's group is sent as pipelined batches (up to 1,000 statements and 32,767 parameters per round trip);
    /// an item the server refuses is a <see cref="BatchItemException"/> in the failures, naming its index in
    /// <paramref name="items"/> and its shard. Inside a <see cref="ShardTransaction"/> every item must belong to its
    /// shard and the batch joins it; inside a distributed transaction each shard's group joins it.
    /// <paramref name="commandTimeout"/> bounds each round trip.
    /// </summary>
    /// <remarks>
    /// On a data source that follows a stored map, a batch with <paramref name="transactionPerShard"/> that a shard refused
    /// because a bucket of its items moved (nothing committed anywhere: the refusal comes before the commit barrier) runs
    /// again whole by the newer map, outside a transaction; inside one the refusal reaches the caller.
    /// </remarks>
    /// <returns>The affected rows per shard and in total.</returns>
    public async Task<BroadcastResult> ExecuteBatchAsync<T>(string sql, IEnumerable<T> items, bool transactionPerShard = true,
        int? commandTimeout = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sql);
        ArgumentNullException.ThrowIfNull(items);
        var list = items as IReadOnlyList<T> ?? items.ToList(); // enumerated again when the batch runs again
        for (var attempt = 0; ; attempt++)
        {
            var epoch = DataSource.Map.Epoch; // before grouping: a refusal waits for a map newer than the one it was grouped by
            try
            {
                return await ExecuteBatchOnceAsync(sql, list, transactionPerShard, commandTimeout, cancellationToken).ConfigureAwait(false);
            }
            catch (BroadcastWriteException e) when (MayRerunBatch(e, attempt, transactionPerShard))
            {
                if (!await DataSource.Shards.Follower!.WaitForNewerMapAsync(epoch, cancellationToken).ConfigureAwait(false))
                {
                    throw;
                }
            }
        }
    }

    // Whether a batch refused because a bucket moved may run again whole: all-or-nothing and committed nowhere (every
    // failure is a refusal, no shard applied or is in doubt), outside any transaction, on a data source following a map.
    private bool MayRerunBatch(BroadcastWriteException error, int attempt, bool transactionPerShard) =>
        attempt < ShardCommandTarget.MoveAttempts && transactionPerShard && DataSource.Shards.Follower is not null && Session.Enlistment is null && CurrentTransaction is null
        && error.Failures.Count > 0 && error.Failures.All(f => ShardBucketMovedException.IsMoved(f.Error))
        && error.AppliedShards.Count == 0 && error.InDoubtShards.Count == 0;

    private async Task<BroadcastResult> ExecuteBatchOnceAsync<T>(string sql, IReadOnlyList<T> items, bool transactionPerShard,
        int? commandTimeout, CancellationToken cancellationToken)
    {
        var groups = GroupByShard(items);
        if (groups.Count == 0)
        {
            return new BroadcastResult(new Dictionary<string, int>(), []);
        }

        if (CurrentTransaction is not null)
        {
            return await RunInTransactionAsync(sql, groups, FenceOf<T>(sql, groups.Keys.First(), groups.Values.First()), commandTimeout, cancellationToken).ConfigureAwait(false);
        }

        using var activity = ShardKitTelemetry.StartFanOut("ExecuteBatch", groups.Count, "affected-rows");
        // Without transactions a cancelled shard would stop at an arbitrary item: every shard runs its whole group instead.
        var options = transactionPerShard ? FanOutOptions.Default : new FanOutOptions { Policy = FanOutPolicy.PartialResults };
        using var run = new FanOutRun(Session, groups.Keys.Order().ToArray(), options, "ExecuteBatch", sql, cancellationToken);
        // Inside a distributed transaction the shards' connections are enlisted already: the batch commits with it.
        var barrier = transactionPerShard && Session.Enlistment is null ? new CommitBarrier(groups.Count) : null;
        // Outside a distributed transaction a shard keeps its group once its commit (or, without transactions, its
        // first item) is sent: the run marks that, so a failure can say what each shard kept.
        var outcome = Session.Enlistment is null ? run : null;
        var results = await run.SettleEachAsync((shard, connection, token) =>
            RunGroupAsync(connection, sql, groups[shard], run.NameOf(shard), barrier, commandTimeout, () => outcome?.MarkSent(shard),
                FenceOf<T>(sql, shard, groups[shard]), token))
            .ConfigureAwait(false);
        return run.Failures.Count == 0
            ? new BroadcastResult(results.ToDictionary(r => run.NameOf(r.Shard), r => r.Result), run.Failures)
            : throw run.WriteFailure(results, committed: barrier is not null, atomic: transactionPerShard);
    }

    // A shard's group names its buckets to the shard's fence where it carries one (ShardSet.NamesBuckets).
    private string? FenceOf<T>(string sql, int shard, BatchGroup group) =>
        DataSource.Map.Strategy is HashShardingStrategy hash && WriteFence.ChangesData(sql) && DataSource.Shards.NamesBuckets(shard)
            ? WriteFence.BucketList(group.Items.Select(item => hash.BucketOf(ShardKeyAccessor<T>.Read((T)item!))).Distinct())
            : null;

    private Dictionary<int, BatchGroup> GroupByShard<T>(IEnumerable<T> items)
    {
        ShardKeyAccessor<T>.EnsureKey();

        var groups = new Dictionary<int, BatchGroup>();
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
                groups[shard] = group = new BatchGroup();
            }

            group.Add(item, index);
            index++;
        }

        return groups;
    }

    // Inside a single-shard transaction the batch joins it: every item must belong to its shard, checked before anything
    // is sent, and a refused item aborts the caller's transaction (roll it back).
    private async Task<BroadcastResult> RunInTransactionAsync(string sql, Dictionary<int, BatchGroup> groups, string? fence, int? commandTimeout,
        CancellationToken cancellationToken)
    {
        var pinned = CurrentTransaction!;
        if (groups.Keys.FirstOrDefault(s => s != pinned.ShardIndex, -1) is var other and >= 0)
        {
            throw new ShardRoutingException(
                $"Item {groups[other].Indexes[0]} of the batch routes to shard '{DataSource.Map.ShardNames[other]}' but the open " +
                $"transaction is pinned to shard '{pinned.Shard}'. Nothing was written. A single-shard transaction cannot touch " +
                "another shard: commit it first, or use a distributed transaction.");
        }

        using var operation = EnterOperation();
        var name = pinned.Shard;
        var rows = await RunOnShardAsync(pinned.ShardIndex, "ExecuteBatch", sql, isWrite: true, (Sql: sql, Group: groups[pinned.ShardIndex],
            Transaction: pinned.Inner, Shard: name, Timeout: commandTimeout, Token: cancellationToken, Fence: fence),
            static (c, s) => PipelinedBatch.ExecuteAsync(c, s.Transaction, ownTransaction: false, s.Sql, s.Group, s.Shard, s.Timeout, s.Token, fence: s.Fence),
            cancellationToken).ConfigureAwait(false);
        return new BroadcastResult(new Dictionary<string, int> { [name] = rows }, []);
    }

    private static async Task<int> RunGroupAsync(NpgsqlConnection connection, string sql, BatchGroup group, string shard, CommitBarrier? barrier,
        int? commandTimeout, Action markSent, string? fence, CancellationToken token)
    {
        var transaction = barrier is not null ? await connection.BeginTransactionAsync(token).ConfigureAwait(false) : null;
        try
        {
            if (transaction is null)
            {
                markSent();
            }

            // Without a barrier (no transactions, or a distributed transaction) each chunk still runs atomically.
            var affected = await PipelinedBatch.ExecuteAsync(connection, transaction, ownTransaction: false, sql, group, shard,
                commandTimeout, token, fence: fence).ConfigureAwait(false);
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

using System.Collections.Concurrent;
using Dapper;

namespace ShardKit.Tests.Resharding;

/// <summary>
/// Writers that each own every <c>Writers</c>-th key, so each knows the true final state of its keys: inserts,
/// updates and deletes through ShardKit, one after another, until stopped. Any error is kept and fails the test, except
/// during an outage (<see cref="OutageBegins"/>): a write that fails then may or may not have committed, so the writer
/// reads what its keys hold once the servers answer and accepts only the value before or after the write (a
/// distributed transaction's keys wait for recovery: <see cref="ResolveInDoubt"/>).
/// </summary>
internal sealed class MoveWriters(ShardedDataSource source, int writers, long keys) : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private long _outageUntil = long.MinValue; // Environment.TickCount64; long.MaxValue while a server is down
    private long _inDoubtTransactions;

    /// <summary>Keys of distributed transactions whose outcome an outage hid: (value before, value after, transaction).</summary>
    public ConcurrentDictionary<long, (int? Before, int? After, long Transaction)> InDoubt { get; } = new();

    /// <summary>Writes that failed during an outage and were settled by reading their keys.</summary>
    public long Settled;

    /// <summary>A server is about to stop: failures are expected until <see cref="OutageEnds"/> plus its settling time.</summary>
    public void OutageBegins() => Interlocked.Exchange(ref _outageUntil, long.MaxValue);

    /// <summary>The servers are back; failures of writes started up to <paramref name="settle"/> from now are still expected.</summary>
    public void OutageEnds(TimeSpan settle) => Interlocked.Exchange(ref _outageUntil, Environment.TickCount64 + (long)settle.TotalMilliseconds);

    public ConcurrentDictionary<long, int?> Truth { get; } = new(); // key -> n, null = deleted

    public ConcurrentQueue<Exception> Errors { get; } = new();

    public long Operations;

    public List<Task> Tasks { get; } = [];

    public void Start()
    {
        for (var w = 0; w < writers; w++)
        {
            var writer = w;
            Tasks.Add(Task.Run(() => RunAsync(writer)));
        }
    }

    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(Tasks);
    }

    /// <summary>Stops writers a failed test left running (a stopped test's writers are already done).</summary>
    public async ValueTask DisposeAsync()
    {
        await WriterTasks.StopAsync(_stop, Tasks);
    }

    private async Task RunAsync(int writer)
    {
        var random = new Random(writer);
        await using var db = source.CreateConnection();
        long Key() => (random.NextInt64(keys / writers) * writers) + writer + 1;
        List<long> Keys(int count) => Enumerable.Range(0, count).Select(_ => Key()).Distinct().ToList();
        var attempt = new Dictionary<long, (int? Before, int? After)>();
        while (!_stop.IsCancellationRequested)
        {
            var started = Environment.TickCount64;
            var pick = random.Next(16);
            attempt.Clear();
            try
            {
                if (pick == 0 && !await TryBulkAsync(db, Keys(3).Where(k => Truth.GetValueOrDefault(k) is null).ToList(), attempt))
                {
                    continue;
                }

                if (pick is 1 or 2 && !await TryDistributedAsync(db, Key(), Key(), attempt))
                {
                    continue;
                }

                if (pick == 3 && !await TryItemListAsync(db, Keys(3), attempt))
                {
                    continue;
                }

                if (pick == 4 && !await TryKeyListAsync(db, Keys(3), attempt))
                {
                    continue;
                }

                if (pick > 4 && !await SingleAsync(db, Key(), random.Next(4) == 0, attempt))
                {
                    continue;
                }

                Interlocked.Increment(ref Operations);
            }
            catch (Exception e) when (started < Interlocked.Read(ref _outageUntil))
            {
                if (pick is 1 or 2)
                {
                    var transaction = Interlocked.Increment(ref _inDoubtTransactions);
                    foreach (var (key, change) in attempt)
                    {
                        InDoubt[key] = (change.Before, change.After, transaction);
                    }

                    continue;
                }

                if (!await SettleAsync(db, attempt, e))
                {
                    return;
                }
            }
            catch (Exception e)
            {
                Errors.Enqueue(e);
                return;
            }
        }
    }

    // A write that failed during an outage: once a read through ShardKit answers on one map from start to end, each key
    // must hold its value from before the write or after it (no other), and that becomes its truth.
    private async Task<bool> SettleAsync(ShardedConnection db, Dictionary<long, (int? Before, int? After)> attempt, Exception failure)
    {
        Interlocked.Increment(ref Settled);
        var ids = attempt.Keys.ToArray();
        var deadline = Environment.TickCount64 + 120_000;
        while (true)
        {
            try
            {
                await source.Resharding.RefreshMapAsync();
                var epoch = source.Map.Epoch;
                var rows = (await db.QueryAsync<(long Id, int N)>("select id, n from items where id = any(@Id)", new { Id = ids })).ToDictionary(r => r.Id, r => (int?)r.N);
                await source.Resharding.RefreshMapAsync();
                if (source.Map.Epoch != epoch)
                {
                    continue; // a move switched while reading: the old owner may have deleted its copies
                }

                foreach (var (key, change) in attempt)
                {
                    var actual = rows.GetValueOrDefault(key);
                    if (actual != change.Before && actual != change.After)
                    {
                        Errors.Enqueue(new InvalidOperationException(
                            $"Key {key} holds {actual?.ToString() ?? "no row"} after a write that failed in an outage; it held {change.Before?.ToString() ?? "no row"} before and would hold {change.After?.ToString() ?? "no row"} after.",
                            failure));
                        return false;
                    }

                    Truth[key] = actual;
                }

                return true;
            }
            catch (Exception) when (Environment.TickCount64 < deadline)
            {
                // Also once the writers are told to stop: the last trial's outage may still hold the read back (the
                // shard's breaker opens for a while after its server came back), and the write must be settled all the same.
                await Task.Delay(200);
            }
            catch (Exception e)
            {
                Errors.Enqueue(new InvalidOperationException("A write that failed in an outage could not be settled by reading its keys.", e));
                return false;
            }
        }
    }

    /// <summary>
    /// After recovery finished every distributed transaction: each in-doubt transaction's keys must all hold their value
    /// from before it or all their value after it (<paramref name="rows"/>: every row on every shard), which becomes the truth.
    /// </summary>
    public void ResolveInDoubt(IReadOnlyDictionary<long, int> rows)
    {
        foreach (var transaction in InDoubt.GroupBy(d => d.Value.Transaction))
        {
            var actual = transaction.ToDictionary(d => d.Key, d => rows.TryGetValue(d.Key, out var n) ? n : (int?)null);
            var before = transaction.All(d => actual[d.Key] == d.Value.Before);
            var after = transaction.All(d => actual[d.Key] == d.Value.After);
            Assert.That(before || after, Is.True,
                $"a distributed transaction hidden by an outage was applied in part: {string.Join(", ", transaction.Select(d => $"{d.Key}: {d.Value.Before}→{d.Value.After}, holds {actual[d.Key]}"))}");
            foreach (var (key, value) in actual)
            {
                Truth[key] = value;
            }
        }
    }

    // One statement through ShardKit, which follows a move by itself.
    private async Task<bool> SingleAsync(ShardedConnection db, long key, bool delete, Dictionary<long, (int? Before, int? After)> attempt)
    {
        if (InDoubt.ContainsKey(key))
        {
            return false;
        }

        if (!Truth.TryGetValue(key, out var n) || n is null)
        {
            attempt[key] = (null, 1);
            await db.ExecuteAsync("insert into items (id, payload, n) values (@Id, @Payload, @N)", new Item { Id = key, Payload = $"k{key}", N = 1 });
            Truth[key] = 1;
        }
        else if (delete)
        {
            attempt[key] = (n, null);
            await db.ExecuteAsync("delete from items where id = @Id", new Item { Id = key });
            Truth[key] = null;
        }
        else
        {
            attempt[key] = (n, n + 1);
            await db.ExecuteAsync("update items set n = n + 1 where id = @Id", new Item { Id = key });
            Truth[key] = n + 1;
        }

        return true;
    }

    // New keys as one list of items, split over their shards; a shard that refuses its share (moved buckets) has that
    // share alone run again by ShardKit, so every item lands once.
    private async Task<bool> TryItemListAsync(ShardedConnection db, List<long> keys, Dictionary<long, (int? Before, int? After)> attempt)
    {
        var fresh = keys.Where(k => Truth.GetValueOrDefault(k) is null && !InDoubt.ContainsKey(k)).ToList();
        if (fresh.Count == 0)
        {
            return false;
        }

        foreach (var key in fresh)
        {
            attempt[key] = (null, 1);
        }

        var affected = await db.ExecuteAsync("insert into items (id, payload, n) values (@Id, @Payload, @N)",
            fresh.Select(k => new Item { Id = k, Payload = "list", N = 1 }).ToList());
        if (affected != fresh.Count)
        {
            throw new InvalidOperationException($"An item list of {fresh.Count} inserted {affected} rows.");
        }

        foreach (var key in fresh)
        {
            Truth[key] = 1;
        }

        return true;
    }

    // Existing keys updated by one statement with a key list, split over their shards in the same way.
    private async Task<bool> TryKeyListAsync(ShardedConnection db, List<long> keys, Dictionary<long, (int? Before, int? After)> attempt)
    {
        var present = keys.Where(k => Truth.GetValueOrDefault(k) is not null && !InDoubt.ContainsKey(k)).ToArray();
        if (present.Length == 0)
        {
            return false;
        }

        foreach (var key in present)
        {
            attempt[key] = (Truth[key], Truth[key] + 1);
        }

        var affected = await db.ExecuteAsync("update items set n = n + 1 where id = any(@Id)", new { Id = present });
        if (affected != present.Length)
        {
            throw new InvalidOperationException($"A key list of {present.Length} updated {affected} rows.");
        }

        foreach (var key in present)
        {
            Truth[key] = Truth[key] + 1;
        }

        return true;
    }

    // Two keys in one distributed transaction; refused by a moving bucket's fence, it keeps nothing and is tried later.
    private async Task<bool> TryDistributedAsync(ShardedConnection db, long first, long second, Dictionary<long, (int? Before, int? After)> attempt)
    {
        if (first == second || InDoubt.ContainsKey(first) || InDoubt.ContainsKey(second))
        {
            return false;
        }

        var next = new Dictionary<long, int?>();
        try
        {
            await using var transaction = await db.BeginDistributedTransactionAsync();
            foreach (var key in new[] { first, second })
            {
                var n = Truth.GetValueOrDefault(key);
                if (n is null)
                {
                    attempt[key] = (null, 1);
                    await db.ExecuteAsync("insert into items (id, payload, n) values (@Id, @Payload, @N)", new Item { Id = key, Payload = "2pc", N = 1 });
                    next[key] = 1;
                }
                else
                {
                    attempt[key] = (n, n + 1);
                    await db.ExecuteAsync("update items set n = n + 1 where id = @Id", new Item { Id = key });
                    next[key] = n + 1;
                }
            }

            var result = await transaction.CommitAsync();
            if (!result.IsComplete)
            {
                // Committed, but a stopped shard applies it only when recovery runs: until then its rows show the old
                // values (and stay locked). The keys rest until the end, where they must hold exactly the new values.
                var transactionId = Interlocked.Increment(ref _inDoubtTransactions);
                foreach (var (key, n) in next)
                {
                    InDoubt[key] = (n, n, transactionId);
                }

                return true;
            }
        }
        catch (Exception e) when (ShardBucketMovedException.IsMoved(e))
        {
            Interlocked.Increment(ref Refused);
            return false;
        }

        foreach (var (key, n) in next)
        {
            Truth[key] = n;
        }

        return true;
    }

    // New keys by bulk COPY; a shard's fence refusing its COPY rolls every shard back, and the load is tried later.
    private async Task<bool> TryBulkAsync(ShardedConnection db, List<long> fresh, Dictionary<long, (int? Before, int? After)> attempt)
    {
        fresh = fresh.Where(k => !InDoubt.ContainsKey(k)).ToList();
        if (fresh.Count == 0)
        {
            return false;
        }

        foreach (var key in fresh)
        {
            attempt[key] = (null, 1);
        }

        try
        {
            await db.BulkInsertAsync("items", fresh.Select(k => new Item { Id = k, Payload = "bulk", N = 1 }));
        }
        catch (Exception e) when (ShardBucketMovedException.IsMoved(e) && e is not BulkInsertException { CommittedShards.Count: > 0 })
        {
            Interlocked.Increment(ref Refused);
            return false;
        }

        foreach (var key in fresh)
        {
            Truth[key] = 1;
        }

        return true;
    }

    /// <summary>Distributed transactions and bulk loads a fence refused (they kept nothing and were tried again).</summary>
    public long Refused;
}

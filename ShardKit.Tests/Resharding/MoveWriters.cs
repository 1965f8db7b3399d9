using System.Collections.Concurrent;

namespace ShardKit.Tests.Resharding;

/// <summary>
/// Writers that each own every <c>Writers</c>-th key, so each knows the true final state of its keys: inserts,
/// updates and deletes through ShardKit, one after another, until stopped. Any error is kept and fails the test.
/// </summary>
internal sealed class MoveWriters(ShardedDataSource source, int writers, long keys)
{
    private readonly CancellationTokenSource _stop = new();

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

    private async Task RunAsync(int writer)
    {
        var random = new Random(writer);
        await using var db = source.CreateConnection();
        long Key() => (random.NextInt64(keys / writers) * writers) + writer + 1;
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                var pick = random.Next(16);
                if (pick == 0 && !await TryBulkAsync(db, Enumerable.Range(0, 3).Select(_ => Key()).Distinct().Where(k => Truth.GetValueOrDefault(k) is null).ToList()))
                {
                    continue;
                }

                if (pick is 1 or 2 && !await TryDistributedAsync(db, Key(), Key()))
                {
                    continue;
                }

                if (pick == 3 && !await TryItemListAsync(db, Enumerable.Range(0, 3).Select(_ => Key()).Distinct().ToList()))
                {
                    continue;
                }

                if (pick == 4 && !await TryKeyListAsync(db, Enumerable.Range(0, 3).Select(_ => Key()).Distinct().ToList()))
                {
                    continue;
                }

                if (pick > 4)
                {
                    await SingleAsync(db, Key(), random.Next(4) == 0);
                }

                Interlocked.Increment(ref Operations);
            }
            catch (Exception e)
            {
                Errors.Enqueue(e);
                return;
            }
        }
    }

    // One statement through ShardKit, which follows a move by itself.
    private async Task SingleAsync(ShardedConnection db, long key, bool delete)
    {
        if (!Truth.TryGetValue(key, out var n) || n is null)
        {
            await db.ExecuteAsync("insert into items (id, payload, n) values (@Id, @Payload, @N)", new Item { Id = key, Payload = $"k{key}", N = 1 });
            Truth[key] = 1;
        }
        else if (delete)
        {
            await db.ExecuteAsync("delete from items where id = @Id", new Item { Id = key });
            Truth[key] = null;
        }
        else
        {
            await db.ExecuteAsync("update items set n = n + 1 where id = @Id", new Item { Id = key });
            Truth[key] = n + 1;
        }
    }

    // New keys as one list of items, split over their shards; a shard that refuses its share (moved buckets) has that
    // share alone run again by ShardKit, so every item lands once.
    private async Task<bool> TryItemListAsync(ShardedConnection db, List<long> keys)
    {
        var fresh = keys.Where(k => Truth.GetValueOrDefault(k) is null).ToList();
        if (fresh.Count == 0)
        {
            return false;
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
    private async Task<bool> TryKeyListAsync(ShardedConnection db, List<long> keys)
    {
        var present = keys.Where(k => Truth.GetValueOrDefault(k) is not null).ToArray();
        if (present.Length == 0)
        {
            return false;
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
    private async Task<bool> TryDistributedAsync(ShardedConnection db, long first, long second)
    {
        if (first == second)
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
                    await db.ExecuteAsync("insert into items (id, payload, n) values (@Id, @Payload, @N)", new Item { Id = key, Payload = "2pc", N = 1 });
                    next[key] = 1;
                }
                else
                {
                    await db.ExecuteAsync("update items set n = n + 1 where id = @Id", new Item { Id = key });
                    next[key] = n + 1;
                }
            }

            await transaction.CommitAsync();
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
    private async Task<bool> TryBulkAsync(ShardedConnection db, List<long> fresh)
    {
        if (fresh.Count == 0)
        {
            return false;
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

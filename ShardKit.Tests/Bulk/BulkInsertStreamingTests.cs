using Npgsql;

namespace ShardKit.Tests.Bulk;

/// <summary>The input is streamed, never materialized: while the shards take no rows, the reader stops within the channel bound.</summary>
public sealed class BulkInsertStreamingTests
{
    [Test]
    public async Task While_every_shard_is_blocked_the_input_is_read_no_further_than_the_channels_hold()
    {
        const int count = 100_000;
        var options = new BulkInsertOptions { BatchSize = 100, ChannelCapacity = 2 };
        await using var ctx = await ShardTestContext.CreateAsync(BulkOrder.Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var locks = await LockEveryShardAsync(ctx);
        var input = new CountingInput(count);

        var load = db.BulkInsertAsync(ctx.Table, input, options);
        var stalledAt = await WaitUntilReadingStopsAsync(input);

        // SHARE mode lets reads through but blocks the COPY. Each shard: a full channel plus the batch being filled; the doc bound adds the one being written.
        var bound = ctx.Shards.Count * (options.ChannelCapacity + 2) * options.BatchSize;
        TestContext.Out.WriteLine($"reading stalled at row {stalledAt}; bound {bound}");
        Assert.That(stalledAt, Is.GreaterThan(0).And.LessThanOrEqualTo(bound), "rows read while no shard could take any");
        Assert.That(load.IsCompleted, Is.False);
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero, "nothing committed yet");

        foreach (var (connection, transaction) in locks)
        {
            await transaction.CommitAsync();
            await connection.DisposeAsync();
        }

        var result = await load;
        Assert.That(result.Total, Is.EqualTo(count));
        Assert.That(input.Read, Is.EqualTo(count));
    }

    private static async Task<List<(NpgsqlConnection, NpgsqlTransaction)>> LockEveryShardAsync(ShardTestContext ctx)
    {
        var locks = new List<(NpgsqlConnection, NpgsqlTransaction)>();
        foreach (var cs in ctx.Shards.ConnectionStrings)
        {
            var conn = new NpgsqlConnection(cs);
            await conn.OpenAsync();
            var transaction = await conn.BeginTransactionAsync();
            await using var cmd = new NpgsqlCommand($"lock table {ctx.Table} in share mode", conn, transaction);
            await cmd.ExecuteNonQueryAsync();
            locks.Add((conn, transaction));
        }

        return locks;
    }

    // Waits for the reader to stall (the count stays put across several looks); the assertion is on the count, not on time.
    private static async Task<long> WaitUntilReadingStopsAsync(CountingInput input)
    {
        var last = -1L;
        var unchanged = 0;
        for (var look = 0; look < 600 && unchanged < 10; look++)
        {
            await Task.Delay(50);
            var now = input.Read;
            unchanged = now == last && now > 0 ? unchanged + 1 : 0;
            last = now;
        }

        return last;
    }

    private sealed class CountingInput(int count) : IEnumerable<BulkOrder>
    {
        private long _read;

        public long Read => Interlocked.Read(ref _read);

        public IEnumerator<BulkOrder> GetEnumerator()
        {
            foreach (var order in BulkOrder.Many(count))
            {
                Interlocked.Increment(ref _read);
                yield return order;
            }
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}

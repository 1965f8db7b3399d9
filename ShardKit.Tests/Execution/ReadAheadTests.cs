using Dapper;
using Npgsql;

namespace ShardKit.Tests.Execution;

/// <summary>How a fan-out shard's rows are read ahead: batches bounded by rows and by memory, handed over early when the next row is not in.</summary>
public sealed class ReadAheadTests
{
    private static async Task<(List<int> Batches, int Rows)> ReadAsync<T>(string sql)
    {
        var shards = await Tests.Shards.GetAsync();
        await using var connection = new NpgsqlConnection(shards.ConnectionStrings[0]);
        await connection.OpenAsync();
        var rows = new ShardRows<T>(connection, new CommandDefinition(sql), CancellationToken.None);
        var batches = new List<int>();
        var count = 0;
        await using (rows)
        {
            while (await rows.MoveNextAsync())
            {
                if (rows.Batches > batches.Count)
                {
                    batches.Add(rows.BatchRows);
                }

                count++;
            }
        }

        Assert.That(await connection.ExecuteScalarAsync<int>("select 1"), Is.EqualTo(1), "the connection is free for the next command");
        return (batches, count);
    }

    [Test]
    public async Task Small_rows_already_in_go_256_to_a_batch()
    {
        var (batches, rows) = await ReadAsync<int>("select g from generate_series(1, 5000) g");
        Assert.That(rows, Is.EqualTo(5000));
        Assert.That(batches.Max(), Is.EqualTo(256));
    }

    [Test]
    public async Task Large_rows_go_a_few_to_a_batch()
    {
        // 60 rows of 100,000 characters (200 kB each as .NET strings): about 1 MiB of rows to a batch, never 60 at once.
        var (batches, rows) = await ReadAsync<string>("select repeat('x', 100000) from generate_series(1, 60)");
        Assert.That(rows, Is.EqualTo(60));
        Assert.That(batches.Max(), Is.InRange(1, 8), string.Join(", ", batches));
    }

    [Test]
    public async Task Rows_already_in_are_handed_over_before_a_row_not_yet_in()
    {
        // The server sends the first rows (300 kB, more than its output buffer) at once and its last rows a second later:
        // the rows already in go to the caller in a short batch instead of waiting for 256. A reader that waited for full
        // batches would take [256, 44].
        var (batches, rows) = await ReadAsync<(int, string)>(
            "select g, repeat('x', 1000) from generate_series(1, 300) g where g < 290 or pg_sleep(0.1) is not null");
        Assert.That(rows, Is.EqualTo(300));
        Assert.That(batches.Sum(), Is.EqualTo(300));
        Assert.That(batches, Has.Count.GreaterThanOrEqualTo(3), string.Join(", ", batches));
        Assert.That(batches[0], Is.EqualTo(256), string.Join(", ", batches));
    }
}

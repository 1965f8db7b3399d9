using System.Globalization;
using Dapper;
using Npgsql;
using NpgsqlTypes;

namespace ShardKit.Tests.Resharding;

/// <summary>
/// One test's bucket move between two real shards: a table of its own created on source (s0) and target (s1), a move
/// id of its own, and checks that compare the moving buckets' rows on both servers.
/// </summary>
internal sealed class MoveFixture : IAsyncDisposable
{
    private MoveFixture(string source, string target, string table)
    {
        Source = source;
        Target = target;
        Table = table;
        MoveId = "t" + Guid.NewGuid().ToString("N")[..16];
    }

    public string Source { get; }

    public string Target { get; }

    public string Table { get; }

    public string MoveId { get; }

    public string SlotName => "shardkit_move_" + MoveId;

    /// <summary>Creates <paramref name="ddl"/> (the table name as {0}) on source and target.</summary>
    public static async Task<MoveFixture> CreateAsync(string ddl, string stem = "mv")
    {
        var shards = await Shards.GetAsync();
        var fixture = new MoveFixture(shards.ConnectionStrings[0], shards.ConnectionStrings[1], Shards.UniqueTable(stem));
        var sql = string.Format(CultureInfo.InvariantCulture, ddl, fixture.Table);
        await fixture.OnSourceAsync(sql);
        await fixture.OnTargetAsync(sql);
        return fixture;
    }

    public async Task<MovedTable> DescribeAsync(string keyColumn)
    {
        await using var connection = new NpgsqlConnection(Source);
        await connection.OpenAsync();
        return await MovedTables.DescribeAsync(connection, Table, keyColumn, CancellationToken.None);
    }

    public Task<int> OnSourceAsync(string sql, object? args = null) => ExecuteAsync(Source, sql, args);

    public Task<int> OnTargetAsync(string sql, object? args = null) => ExecuteAsync(Target, sql, args);

    public static async Task<int> ExecuteAsync(string connectionString, string sql, object? args = null)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        return await connection.ExecuteAsync(sql, args);
    }

    public static async Task<List<T>> QueryAsync<T>(string connectionString, string sql, object? args = null)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        return (await connection.QueryAsync<T>(sql, args)).ToList();
    }

    public async Task<NpgsqlLogSequenceNumber> SourceLsnAsync() =>
        (await QueryAsync<NpgsqlLogSequenceNumber>(Source, "select pg_current_wal_lsn()"))[0];

    /// <summary>Every row of <paramref name="buckets"/> on one server, as text, in key order.</summary>
    public static Task<List<string>> RowsAsync(string connectionString, MovedTable table, IEnumerable<int> buckets, int bucketCount) =>
        QueryAsync<string>(connectionString,
            $"select r::text from {table.QualifiedName} r where {table.BucketSql(bucketCount)} = any(@b) order by r::text collate \"C\"",
            new { b = buckets.ToArray() });

    /// <summary>Asserts that the target holds exactly the source's rows of <paramref name="buckets"/> and no other row.</summary>
    public async Task AssertMovedAsync(MovedTable table, IReadOnlyCollection<int> buckets, int bucketCount)
    {
        var onSource = await RowsAsync(Source, table, buckets, bucketCount);
        var onTarget = await RowsAsync(Target, table, buckets, bucketCount);
        var total = (await QueryAsync<long>(Target, $"select count(*) from {table.QualifiedName}"))[0];
        Assert.That(onSource, Is.Not.Empty, "the moving buckets hold rows on the source");
        Assert.That(onTarget, Is.EqualTo(onSource), "the target holds the source's rows of the moving buckets");
        Assert.That(total, Is.EqualTo(onTarget.Count), "the target holds no row of another bucket");
    }

    public async Task<(long Slots, long Publications)> LeftoversAsync()
    {
        var slots = await QueryAsync<long>(Source, "select count(*) from pg_replication_slots where slot_name = @n", new { n = SlotName });
        var publications = await QueryAsync<long>(Source, "select count(*) from pg_publication where pubname = @n", new { n = SlotName });
        return (slots[0], publications[0]);
    }

    public async ValueTask DisposeAsync()
    {
        await BucketReplication.DropAsync(Source, MoveId, CancellationToken.None);
        await OnSourceAsync($"drop table if exists {Table}");
        await OnTargetAsync($"drop table if exists {Table}");
    }
}

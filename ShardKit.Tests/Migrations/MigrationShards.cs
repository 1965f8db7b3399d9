using Dapper;
using Npgsql;

namespace ShardKit.Tests.Migrations;

/// <summary>
/// Real shards for one migration test: a schema of its own on every shard (history table and the scripts' tables live
/// there, so tests run in parallel and never share a lock), and direct per-server access to check each shard's truth.
/// </summary>
internal sealed class MigrationShards : IAsyncDisposable
{
    private readonly bool _ownsSchema;

    private MigrationShards(IReadOnlyList<string> direct, string[] names, string schema, bool ownsSchema)
    {
        Direct = direct;
        Names = names;
        Schema = schema;
        _ownsSchema = ownsSchema;
        Source = NewSource();
    }

    public IReadOnlyList<string> Direct { get; }

    public string[] Names { get; }

    public string Schema { get; }

    public ShardedDataSource Source { get; }

    public MigrationOptions Options => new() { HistorySchema = Schema };

    public MigrationOptions OptionsWith(string? canary = null, TimeSpan? lockTimeout = null, bool allowDrift = false) => new()
    {
        HistorySchema = Schema,
        CanaryShard = canary,
        LockTimeout = lockTimeout ?? TimeSpan.FromSeconds(30),
        AllowChecksumDrift = allowDrift,
    };

    public static async Task<MigrationShards> SharedAsync()
    {
        var shards = await Shards.GetAsync();
        return new MigrationShards(shards.ConnectionStrings, shards.Names.ToArray(), "mig_" + Guid.NewGuid().ToString("N")[..10], ownsSchema: true);
    }

    public static MigrationShards Over(IReadOnlyList<string> direct) =>
        new(direct, Enumerable.Range(0, direct.Count).Select(i => $"s{i}").ToArray(), "mig_" + Guid.NewGuid().ToString("N")[..10], ownsSchema: false);

    /// <summary>Another data source over the same servers (another process, as far as the servers can tell).</summary>
    public ShardedDataSource NewSource(int? take = null, Microsoft.Extensions.Logging.ILoggerFactory? logs = null)
    {
        var builder = new ShardedDataSourceBuilder();
        if (logs is not null)
        {
            builder.UseLoggerFactory(logs);
        }

        for (var i = 0; i < (take ?? Direct.Count); i++)
        {
            builder.AddShard(Names[i], Direct[i] + ";Pooling=false");
        }

        return builder.Build();
    }

    /// <summary>A script text with {0} replaced by this test's schema.</summary>
    public Migration Script(long version, string name, string sql, bool transactional = true) =>
        new(version, name, string.Format(System.Globalization.CultureInfo.InvariantCulture, sql, Schema)) { IsTransactional = transactional };

    public async Task<T> ScalarAsync<T>(int shard, string sql)
    {
        await using var conn = await OpenAsync(shard);
        return (await conn.ExecuteScalarAsync<T>(string.Format(System.Globalization.CultureInfo.InvariantCulture, sql, Schema)))!;
    }

    public async Task<List<T>> QueryAsync<T>(int shard, string sql)
    {
        await using var conn = await OpenAsync(shard);
        return (await conn.QueryAsync<T>(string.Format(System.Globalization.CultureInfo.InvariantCulture, sql, Schema))).ToList();
    }

    public async Task OnShardAsync(int shard, string sql)
    {
        await using var conn = await OpenAsync(shard);
        await conn.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, sql, Schema));
    }

    /// <summary>The history versions on each shard; an empty list where the table does not exist.</summary>
    public async Task<long[][]> HistoryAsync()
    {
        var result = new long[Direct.Count][];
        for (var i = 0; i < Direct.Count; i++)
        {
            result[i] = await ScalarAsync<bool>(i, "select to_regclass('{0}.shardkit_migrations') is not null")
                ? (await QueryAsync<long>(i, "select version from {0}.shardkit_migrations order by version")).ToArray()
                : [];
        }

        return result;
    }

    public Task<bool> TableExistsAsync(int shard, string table) => ScalarAsync<bool>(shard, $"select to_regclass('{{0}}.{table}') is not null");

    /// <summary>Indexes left invalid by a failed concurrent build, in this test's schema.</summary>
    public Task<long> InvalidIndexesAsync(int shard) => ScalarAsync<long>(shard,
        "select count(*) from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace " +
        "where not i.indisvalid and n.nspname = '{0}'");

    private async Task<NpgsqlConnection> OpenAsync(int shard)
    {
        var conn = new NpgsqlConnection(Direct[shard] + ";Pooling=false");
        await conn.OpenAsync();
        return conn;
    }

    public async ValueTask DisposeAsync()
    {
        await Source.DisposeAsync();
        if (_ownsSchema)
        {
            for (var i = 0; i < Direct.Count; i++)
            {
                await OnShardAsync(i, "drop schema if exists {0} cascade");
            }
        }
    }
}

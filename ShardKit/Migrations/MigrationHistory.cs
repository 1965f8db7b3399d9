using System.Security.Cryptography;
using System.Text;
using Npgsql;

namespace ShardKit;

/// <summary>The per-shard history table and the advisory lock key derived from its name.</summary>
internal sealed class MigrationHistory
{
    /// <summary>'SHKM': the first key of ShardKit's migration advisory lock (the two-int form, so it never meets a one-bigint lock).</summary>
    public const int LockClass = 0x53484B4D;

    public MigrationHistory(MigrationOptions options)
    {
        Schema = options.HistorySchema;
        Table = options.HistoryTable;
        QualifiedName = Quote(Schema) + "." + Quote(Table);
        // Per history table, so two applications that keep separate histories in one database do not wait for each other.
        LockObject = BitConverter.ToInt32(SHA256.HashData(Encoding.UTF8.GetBytes(QualifiedName))) & int.MaxValue;
    }

    public string Schema { get; }

    public string Table { get; }

    public string QualifiedName { get; }

    public int LockObject { get; }

    public string CreateSql =>
        $"""
        create table if not exists {QualifiedName} (
            version bigint primary key,
            name text not null,
            checksum text not null,
            applied_at timestamptz not null default now(),
            duration_ms bigint not null,
            transactional boolean not null)
        """;

    public string InsertSql =>
        $"insert into {QualifiedName} (version, name, checksum, duration_ms, transactional) values ($1, $2, $3, $4, $5)";

    public string SelectSql =>
        $"select version, name, checksum, applied_at, duration_ms, transactional from {QualifiedName} order by version";

    /// <summary>The history rows; empty when the table does not exist yet.</summary>
    public async Task<IReadOnlyList<AppliedMigration>> ReadAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        if (!await ExistsAsync(connection, cancellationToken).ConfigureAwait(false))
        {
            return [];
        }

        var rows = new List<AppliedMigration>();
        var command = new NpgsqlCommand(SelectSql, connection);
        await using (command.ConfigureAwait(false))
        {
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    rows.Add(new AppliedMigration(reader.GetInt64(0), reader.GetString(1), reader.GetString(2),
                        reader.GetFieldValue<DateTimeOffset>(3), TimeSpan.FromMilliseconds(reader.GetInt64(4)), reader.GetBoolean(5)));
                }
            }
        }

        return rows;
    }

    /// <summary>Creates the schema (only when missing, so no CREATE right on the database is needed otherwise) and the table.</summary>
    public async Task EnsureAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        if (await ExistsAsync(connection, cancellationToken).ConfigureAwait(false))
        {
            return;
        }

        var schemaExists = new NpgsqlCommand("select exists (select 1 from pg_namespace where nspname = $1)", connection)
        {
            Parameters = { new() { Value = Schema } },
        };
        await using (schemaExists.ConfigureAwait(false))
        {
            if (!(bool)(await schemaExists.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!)
            {
                await ExecuteAsync(connection, $"create schema if not exists {Quote(Schema)}", cancellationToken).ConfigureAwait(false);
            }
        }

        await ExecuteAsync(connection, CreateSql, cancellationToken).ConfigureAwait(false);
    }

    private async Task<bool> ExistsAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand("select to_regclass($1) is not null", connection) { Parameters = { new() { Value = QualifiedName } } };
        await using (command.ConfigureAwait(false))
        {
            return (bool)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        }
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        var command = new NpgsqlCommand(sql, connection);
        await using (command.ConfigureAwait(false))
        {
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
}

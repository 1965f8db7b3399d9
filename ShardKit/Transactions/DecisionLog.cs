using Npgsql;

namespace ShardKit;

/// <summary>
/// The two-phase commit decision log: one row per decided global id in <c>shardkit_2pc_decisions</c> on the
/// coordinator shard, created when the first decision is recorded, or before it when the decision is written inside the
/// coordinator's own transaction (<c>create table if not exists</c>); reads of a log
/// that does not exist yet find no decisions and create nothing. A committer writes <c>commit</c> only
/// after every shard prepared; recovery writes <c>abort</c> before rolling back an undecided id. The primary key makes
/// the two exclusive: whichever insert lands first is the outcome, and the other side reads it back.
/// </summary>
internal static class DecisionLog
{
    public const string Table = "shardkit_2pc_decisions";
    public const string Commit = "commit";
    public const string Abort = "abort";

    private const string CreateSql =
        "create table if not exists " + Table + " (gid text primary key, outcome text not null check (outcome in ('commit', 'abort')), " +
        "shards text[] not null, created_at timestamptz not null default now())";

    // A decision must survive a crash the moment it is acknowledged, even where the server runs with
    // synchronous_commit = off: this statement's own transaction raises it to on (stricter levels are kept).
    private const string InsertOnlySql =
        "insert into " + Table + " (gid, outcome, shards) select $1, $2, $3 from (select set_config('synchronous_commit', " +
        "case when current_setting('synchronous_commit') in ('off', 'local') then 'on' else current_setting('synchronous_commit') end, true)) durable";

    private const string InsertSql = InsertOnlySql + " on conflict (gid) do nothing";

    /// <summary>
    /// The commit decision as the first statement of a batch that ends the coordinator's own transaction with
    /// <c>COMMIT</c>. A plain insert, no <c>on conflict</c>: when recovery's abort row is already there the insert fails,
    /// and the transaction with it, so the <c>COMMIT</c> after it never commits the coordinator's data under an abort;
    /// when recovery's insert is still uncommitted, this one waits for it. Its <c>set_config</c> makes the whole
    /// transaction's commit durable.
    /// </summary>
    public static NpgsqlBatchCommand CommitInTransaction(string gid, string[] shards) => new(InsertOnlySql)
    {
        Parameters = { new() { Value = gid }, new() { Value = Commit }, new() { Value = shards } },
    };

    /// <summary>True when <paramref name="error"/> is the commit insert colliding with a decision already recorded.</summary>
    public static bool IsConflict(PostgresException error) =>
        error is { SqlState: PostgresErrorCodes.UniqueViolation, TableName: Table };

    /// <summary>
    /// Creates the log unless it exists. A decision written inside a transaction cannot create the table on the fly (a
    /// failed insert aborts the transaction), so the coordinator's local commit makes sure of it beforehand, once. Checking
    /// first keeps a role with INSERT but no CREATE working once the table exists.
    /// </summary>
    public static async Task EnsureAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var check = new NpgsqlCommand("select to_regclass('" + Table + "') is not null", connection);
        await using (check.ConfigureAwait(false))
        {
            if (await check.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is true)
            {
                return;
            }
        }

        await CreateAsync(connection).ConfigureAwait(false);
    }

    /// <summary>Records a decision; returns the outcome that holds (<c>abort</c> when recovery got there first).</summary>
    public static Task<string> RecordAsync(NpgsqlConnection connection, string gid, string outcome, string[] shards, CancellationToken cancellationToken) =>
        CreatingTableAsync(connection, async () =>
        {
            var insert = new NpgsqlCommand(InsertSql, connection);
            await using (insert.ConfigureAwait(false))
            {
                insert.Parameters.Add(new() { Value = gid });
                insert.Parameters.Add(new() { Value = outcome });
                insert.Parameters.Add(new() { Value = shards });
                if (await insert.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1)
                {
                    return outcome;
                }
            }

            // Lost the race (or a retry after an unknown result): the row that is there decides.
            var existing = await ReadAsync(connection, [gid], cancellationToken).ConfigureAwait(false);
            return existing.TryGetValue(gid, out var decided)
                ? decided
                : throw new InvalidOperationException($"The decision for {gid} conflicted but cannot be read back.");
        });

    /// <summary>The recorded outcomes of <paramref name="gids"/>; ids with no decision are absent.</summary>
    public static Task<Dictionary<string, string>> ReadAsync(NpgsqlConnection connection, string[] gids, CancellationToken cancellationToken) =>
        OrWhenNoTableAsync(new Dictionary<string, string>(StringComparer.Ordinal), async () =>
        {
            var command = new NpgsqlCommand("select gid, outcome from " + Table + " where gid = any($1)", connection);
            await using var commandScope = command.ConfigureAwait(false);
            command.Parameters.Add(new() { Value = gids });
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using var readerScope = reader.ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                result[reader.GetString(0)] = reader.GetString(1);
            }

            return result;
        });

    /// <summary>Every decision row: its id, outcome, shards and age on the coordinator's clock.</summary>
    public static Task<List<DecisionRow>> ReadAllAsync(NpgsqlConnection connection, CancellationToken cancellationToken) =>
        OrWhenNoTableAsync(new List<DecisionRow>(), async () =>
        {
            var command = new NpgsqlCommand(
                "select gid, outcome, shards, extract(epoch from now() - created_at)::float8 from " + Table, connection);
            await using var commandScope = command.ConfigureAwait(false);
            var rows = new List<DecisionRow>();
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using var readerScope = reader.ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                rows.Add(new DecisionRow(reader.GetString(0), reader.GetString(1), reader.GetFieldValue<string[]>(2),
                    TimeSpan.FromSeconds(reader.GetDouble(3))));
            }

            return rows;
        });

    public static async Task<int> DeleteAsync(NpgsqlConnection connection, string[] gids, CancellationToken cancellationToken)
    {
        if (gids.Length == 0)
        {
            return 0;
        }

        var command = new NpgsqlCommand("delete from " + Table + " where gid = any($1)", connection);
        await using var commandScope = command.ConfigureAwait(false);
        command.Parameters.Add(new() { Value = gids });
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task<T> OrWhenNoTableAsync<T>(T empty, Func<Task<T>> work)
    {
        try
        {
            return await work().ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            return empty;
        }
    }

    private static async Task<T> CreatingTableAsync<T>(NpgsqlConnection connection, Func<Task<T>> work)
    {
        try
        {
            return await work().ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            await CreateAsync(connection).ConfigureAwait(false);
            return await work().ConfigureAwait(false);
        }
    }

    private static async Task CreateAsync(NpgsqlConnection connection)
    {
        try
        {
            var command = new NpgsqlCommand(CreateSql, connection);
            await using var commandScope = command.ConfigureAwait(false);
            await command.ExecuteNonQueryAsync().ConfigureAwait(false);
        }
        catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.UniqueViolation or PostgresErrorCodes.DuplicateTable
                                              or PostgresErrorCodes.DuplicateObject)
        {
            // Two processes created it at the same moment ("if not exists" is not atomic in the catalog; the loser hears of
            // the table, its row type (42710) or a catalog key): it exists.
        }
    }
}

/// <summary>One row of the decision log.</summary>
internal sealed record DecisionRow(string Gid, string Outcome, string[] Shards, TimeSpan Age);

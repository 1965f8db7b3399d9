using Npgsql;

namespace ShardKit;

/// <summary>Shapes a shard's failure into a <see cref="MigrationException"/> that says what was kept and what to do.</summary>
internal static class MigrationFailure
{
    public static MigrationException Create(ShardInfo shard, Migration? migration, bool isCanary, Exception error)
    {
        var server = error as PostgresException ?? error.InnerException as PostgresException;
        var cause = server is not null
            ? $"{server.SqlState}: {server.MessageText}"
            : error.GetType().Name + ": " + ConnectionStrings.Redact(error.Message, shard.ConnectionString);
        var message = migration is null
            ? $"Could not start migrating shard '{shard.Name}' ({cause}). Nothing was applied on any shard; make the shard reachable and run again."
            : $"Migration {migration} failed on shard '{shard.Name}'{(isCanary ? " (the canary)" : "")}: {cause}. " + Kept(migration) +
              (isCanary ? " No other shard was touched." : "") + Hint(server) +
              " Fix the cause and run the migration again: applied scripts are skipped and every shard converges.";
        return new MigrationException(message, error)
        {
            Shard = shard.Name,
            Version = migration?.Version,
            Script = migration?.ToString(),
            SqlState = server?.SqlState,
        };
    }

    private static string Kept(Migration migration) => migration.IsTransactional
        ? "The script was rolled back on this shard."
        : "The script is non-transactional: its statements before the failure stay, and a re-run drops the invalid indexes it names " +
          "and runs it again from the top, so it must be idempotent (IF NOT EXISTS).";

    private static string Hint(PostgresException? server) => server?.SqlState == PostgresErrorCodes.ActiveSqlTransaction
        ? " A statement that cannot run in a transaction (CREATE INDEX CONCURRENTLY) needs a non-transactional script: make its first line " +
          Migration.NoTransactionMarker + "."
        : "";
}

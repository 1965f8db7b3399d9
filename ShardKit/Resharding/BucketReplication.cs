using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;
using Npgsql.Replication;
using Npgsql.Replication.PgOutput;

namespace ShardKit;

/// <summary>
/// Moves the rows of some hash buckets from a source shard to a target shard: a publication and a logical replication
/// slot (pgoutput) on the source, a binary COPY of each (table, bucket) chunk under the slot's exported snapshot, then
/// catch-up from the slot applied to the target by primary key, then removal of slot and publication.
/// </summary>
/// <remarks>
/// Privileges: on the source, a role with the REPLICATION attribute that owns the tables (CREATE PUBLICATION ... FOR
/// TABLE needs ownership and CREATE on the database); on the target, INSERT, UPDATE, DELETE and SELECT on the tables.
/// PostgreSQL 14 or later on the source (pgoutput's <c>messages</c> option), <c>wal_level = logical</c> and a free
/// replication slot and WAL sender.
/// No superuser and no CREATE SUBSCRIPTION. Every target connection first turns the ownership fence off for its session
/// (<c>shardkit.fence = off</c>), since the target does not own the buckets yet.
/// </remarks>
internal sealed partial class BucketReplication : IAsyncDisposable
{
    private const string Prefix = "shardkit_move_";

    private readonly string _source;
    private readonly IReadOnlyList<MovedTable> _tables;
    private LogicalReplicationConnection? _exporter;
    private string? _snapshot;
    // The exporter's walsender once its snapshot is let go of: the first catch-up streams on it instead of starting
    // another backend on the source (a new session there costs the other buckets' writers CPU).
    private LogicalReplicationConnection? _spare;
    private ChangeStream? _stream;
    private ChangedKeys? _recording;

    private BucketReplication(string source, string moveId, IReadOnlyList<MovedTable> tables, LogicalReplicationConnection? exporter, string? snapshot)
    {
        _source = source;
        _tables = tables;
        _exporter = exporter;
        _snapshot = snapshot;
        SlotName = Prefix + moveId;
        _session = MoverSessionName(moveId);
    }

    // The application_name of this move's target sessions (see MoverSessionName).
    private readonly string _session;

    /// <summary>The name of the slot and of the publication: <c>shardkit_move_{moveId}</c>.</summary>
    public string SlotName { get; }

    /// <summary>The most rows a second <see cref="CopyAsync"/> copies, all its scans together; null for no limit.</summary>
    public long? CopyRowsPerSecond { get; set; }

    /// <summary>The exported snapshot the next copy reads under, until a copy has imported it; null after a resume.</summary>
    public string? Snapshot => _snapshot;

    /// <summary>
    /// Creates the publication <c>shardkit_move_{moveId}</c> for <paramref name="tables"/> and a logical slot of the same name
    /// with an exported snapshot, held open until <see cref="CopyAsync"/> has imported it.
    /// Needs, on the source, ownership of the tables, CREATE on the database and the REPLICATION attribute.
    /// </summary>
    /// <exception cref="BucketMoveException">The slot or publication already exists: resume or drop that move.</exception>
    public static async Task<BucketReplication> StartAsync(string sourceConnectionString, string moveId, IReadOnlyList<MovedTable> tables, CancellationToken ct,
        IReadOnlyCollection<int>? buckets = null, int bucketCount = 0)
    {
        ValidateMoveId(moveId);
        ArgumentOutOfRangeException.ThrowIfZero(tables.Count);
        var name = Prefix + moveId;
        var connection = await OpenAsync(sourceConnectionString, ct).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            try
            {
                // A partitioned table's changes come under its own name, not its partitions' (and only so does PostgreSQL
                // take a row filter on it); no effect on other tables.
                await ExecuteAsync(connection, $"create publication {MovedTable.Quote(name)} for table " +
                                               string.Join(", ", tables.Select(t => t.QualifiedName + RowFilter(t, buckets, bucketCount))) +
                                               " with (publish_via_partition_root = true)", ct).ConfigureAwait(false);
            }
            catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.DuplicateObject)
            {
                throw new BucketMoveException($"Publication {name} already exists: move {moveId} was started before; resume it or drop it first.", e);
            }
        }

        var exporter = new LogicalReplicationConnection(MoverConnectionString(sourceConnectionString));
        try
        {
            await exporter.Open(ct).ConfigureAwait(false);
            var slot = await exporter.CreatePgOutputReplicationSlot(name, temporarySlot: false, LogicalSlotSnapshotInitMode.Export, cancellationToken: ct)
                .ConfigureAwait(false);
            return new BucketReplication(sourceConnectionString, moveId, tables, exporter, slot.SnapshotName);
        }
        catch (Exception e)
        {
            await exporter.DisposeAsync().ConfigureAwait(false);
            await DropAsync(sourceConnectionString, moveId, CancellationToken.None).ConfigureAwait(false);
            if (e is PostgresException { SqlState: PostgresErrorCodes.DuplicateObject })
            {
                throw new BucketMoveException($"Replication slot {name} already exists: move {moveId} was started before; resume it or drop it first.", e);
            }

            throw;
        }
    }

    // With the moving buckets known and the shard key inside the replica identity, the server sends only their rows'
    // changes (a row filter, PostgreSQL 15): catch-up then keeps pace with busy writers of the other buckets.
    private static string RowFilter(MovedTable table, IReadOnlyCollection<int>? buckets, int bucketCount) =>
        buckets is { Count: > 0 } && bucketCount > 0 && table.PrimaryKey.Contains(table.KeyColumn)
            ? $" where (({table.BucketSql(bucketCount)})::int in ({string.Join(", ", buckets.Order().Select(b => b.ToString(CultureInfo.InvariantCulture)))}))"
            : "";

    /// <summary>
    /// Takes up a move whose slot and publication exist (after a crash). There is no snapshot: a copy then reads current
    /// data, and catch-up replays from the slot's confirmed position, which is harmless on newer rows.
    /// Needs to read <c>pg_replication_slots</c> and <c>pg_publication</c> (any role).
    /// </summary>
    /// <exception cref="BucketMoveException">The slot or the publication is missing: start the move again.</exception>
    public static async Task<BucketReplication> ResumeAsync(string sourceConnectionString, string moveId, IReadOnlyList<MovedTable> tables, CancellationToken ct)
    {
        ValidateMoveId(moveId);
        var name = Prefix + moveId;
        var connection = await OpenAsync(sourceConnectionString, ct).ConfigureAwait(false);
        await using var connectionLifetime = connection.ConfigureAwait(false);
        var command = new NpgsqlCommand(
            "select (select count(*) from pg_replication_slots where slot_name = $1 and plugin = 'pgoutput'), " +
            "(select count(*) from pg_publication where pubname = $1)", connection) { Parameters = { new() { Value = name } } };
        await using var commandLifetime = command.ConfigureAwait(false);
        var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await using var readerLifetime = reader.ConfigureAwait(false);
        await reader.ReadAsync(ct).ConfigureAwait(false);
        if (reader.GetInt64(0) == 0 || reader.GetInt64(1) == 0)
        {
            throw new BucketMoveException($"Move {moveId} cannot resume: its replication slot or publication {name} is missing on the source; " +
                                          "drop what is left of it and start the move again.") { SlotGone = true };
        }

        return new BucketReplication(sourceConnectionString, moveId, tables, exporter: null, snapshot: null);
    }

    /// <summary>
    /// Drops the slot and the publication of <paramref name="moveId"/> if they exist, first ending a walsender that still
    /// streams the slot. Idempotent. Needs the REPLICATION attribute (to drop the slot), ownership of the publication, and to
    /// be the role that holds the slot's walsender (or a member of <c>pg_signal_backend</c>) when it is still active.
    /// </summary>
    public static async Task DropAsync(string sourceConnectionString, string moveId, CancellationToken ct)
    {
        ValidateMoveId(moveId);
        var name = Prefix + moveId;
        var connection = await OpenAsync(sourceConnectionString, ct).ConfigureAwait(false);
        await using var connectionLifetime = connection.ConfigureAwait(false);
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                await CountAsync(connection, "select count(pg_terminate_backend(active_pid)) from pg_replication_slots " +
                                             "where slot_name = $1 and active_pid is not null", name, ct).ConfigureAwait(false);
                await CountAsync(connection, "select count(pg_drop_replication_slot(slot_name)) from pg_replication_slots " +
                                             "where slot_name = $1 and active_pid is null", name, ct).ConfigureAwait(false);
                if (await CountAsync(connection, "select count(*) from pg_replication_slots where slot_name = $1", name, ct).ConfigureAwait(false) == 0)
                {
                    break;
                }
            }
            catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.ObjectInUse && attempt < 100)
            {
                // The terminated walsender has not let go of the slot yet.
            }

            if (attempt >= 100)
            {
                throw new BucketMoveException($"Replication slot {name} is still in use after 10 s; end the process that streams it and drop again.");
            }

            await Task.Delay(100, ct).ConfigureAwait(false);
        }

        // The tables leave the publication first, and the publication goes a moment later. A writer of a published table
        // builds the table's list of publications from the catalog and then looks each one up: a publication dropped in
        // between failed its statement with "XX000: cache lookup failed for publication" (CI, a disjoint move's writers on
        // 2 busy cores). Once the tables are out, the list a writer builds no longer names it by the time it goes.
        var command = new NpgsqlCommand("select string_agg(r.prrelid::regclass::text, ', ') from pg_publication_rel r " +
                                        "join pg_publication p on p.oid = r.prpubid where p.pubname = $1", connection) { Parameters = { new() { Value = name } } };
        await using (command.ConfigureAwait(false))
        {
            if (await command.ExecuteScalarAsync(ct).ConfigureAwait(false) is string tables)
            {
                try
                {
                    await ExecuteAsync(connection, $"alter publication {MovedTable.Quote(name)} drop table {tables}", ct).ConfigureAwait(false);
                    await Task.Delay(PublicationDropDelay, ct).ConfigureAwait(false);
                }
                catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UndefinedObject)
                {
                    // Another drop of the same move (a cancel racing the mover) took the publication or a table out first.
                }
            }
        }

        await ExecuteAsync(connection, $"drop publication if exists {MovedTable.Quote(name)}", ct).ConfigureAwait(false);
    }

    private static readonly TimeSpan PublicationDropDelay = TimeSpan.FromMilliseconds(50);

    /// <summary>Closes the replication stream and lets go of the exported snapshot if no copy took it. The slot and publication stay (see <see cref="DropAsync"/>).</summary>
    public async ValueTask DisposeAsync()
    {
        await CloseStreamAsync().ConfigureAwait(false);
        await ReleaseSnapshotAsync().ConfigureAwait(false);
        if (Interlocked.Exchange(ref _spare, null) is { } spare)
        {
            await spare.DisposeAsync().ConfigureAwait(false);
        }
    }

    // Lets go of the exported snapshot. With keep, the exporter's connection stays open for the first catch-up (it then
    // holds its WAL sender through the copy, as one running move always does): any next command on a walsender ends the
    // snapshot it exported, and IDENTIFY_SYSTEM is the cheapest one. A connection that fails it, or does not answer within
    // a few seconds (a replication connection has no keepalive), is closed; the catch-up then opens its own.
    private async Task ReleaseSnapshotAsync(bool keep = false, CancellationToken ct = default)
    {
        _snapshot = null;
        if (Interlocked.Exchange(ref _exporter, null) is not { } exporter)
        {
            return;
        }

        var parked = false;
        try
        {
            if (keep)
            {
                using var answer = CancellationTokenSource.CreateLinkedTokenSource(ct);
                answer.CancelAfter(SpareAnswerWait);
                await exporter.IdentifySystem(answer.Token).ConfigureAwait(false);
                parked = Interlocked.CompareExchange(ref _spare, exporter, null) is null;
            }
        }
        catch (Exception e) when (!ct.IsCancellationRequested && (e is OperationCanceledException or InvalidOperationException || ShardErrors.FromShard(e)))
        {
            // Closed below.
        }
        finally
        {
            if (!parked)
            {
                await exporter.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private static readonly TimeSpan SpareAnswerWait = TimeSpan.FromSeconds(5);

    private static void ValidateMoveId(string moveId)
    {
        if (!MoveId().IsMatch(moveId))
        {
            throw new ArgumentException($"Move id '{moveId}' must be 1 to 40 lower-case letters, digits or underscores: it names a slot.", nameof(moveId));
        }
    }

    private static PgOutputReplicationOptions Options(string publication) =>
        new(publication, PgOutputProtocolVersion.V1, binary: false, streamingMode: null, messages: true, twoPhase: null);

    /// <summary>
    /// The mover's connection string for a shard: its own pool (not the one an app's <c>new NpgsqlConnection</c> of the
    /// same string shares), named in <c>pg_stat_activity</c>, and reset when returned to the pool, because its sessions
    /// turn the fence off (<c>shardkit.fence = off</c>).
    /// </summary>
    internal static string MoverConnectionString(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString) { NoResetOnClose = false };
        builder.ApplicationName = string.IsNullOrEmpty(builder.ApplicationName) ? MoverApplicationName : $"{builder.ApplicationName} ({MoverApplicationName})";
        return builder.ConnectionString;
    }

    /// <summary>The <c>application_name</c> of a move's connections (after the app's own when it sets one).</summary>
    public const string MoverApplicationName = "shardkit mover";

    private static async Task<NpgsqlConnection> OpenAsync(string connectionString, CancellationToken ct)
    {
        var connection = new NpgsqlConnection(MoverConnectionString(connectionString));
        try
        {
            await connection.OpenAsync(ct).ConfigureAwait(false);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// The <c>application_name</c> of the sessions that write a move's rows to its target, for the time they do: a cancel
    /// ends them (<see cref="EndTargetSessionsAsync"/>) before it deletes what they wrote. The pool's reset puts the
    /// connection string's name back.
    /// </summary>
    internal static string MoverSessionName(string moveId) => $"{MoverApplicationName} {moveId}";

    // A target connection: the fence refuses writes to buckets the target does not own yet, which is every moving bucket.
    // session: the move's name for it (MoverSessionName).
    private static async Task<NpgsqlConnection> OpenTargetAsync(string connectionString, string session, CancellationToken ct)
    {
        var connection = await OpenAsync(connectionString, ct).ConfigureAwait(false);
        try
        {
            // A chunk is recorded done, and a position confirmed to the slot, once the target committed it: the commit must
            // be durable then, even on a server whose default is synchronous_commit=off (it could lose the last commits).
            await ExecuteAsync(connection, "select set_config('shardkit.fence', 'off', false), set_config('synchronous_commit', 'on', false), " +
                                           $"set_config('application_name', {ReshardingAdmin.Literal(session)}, false)", ct)
                .ConfigureAwait(false);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Ends the target sessions of move <paramref name="moveId"/> that are working (a mover in another process that a
    /// cancel overtakes) and returns how many it found. Idle ones are left: they wait in a pool with the move's name until
    /// its reset, and ending them would break that pool's next command. Needs to be the role of those sessions, or a
    /// member of <c>pg_signal_backend</c>.
    /// </summary>
    public static async Task<long> EndTargetSessionsAsync(string targetConnectionString, string moveId, CancellationToken ct)
    {
        ValidateMoveId(moveId);
        // Not a pooled connection: one the move's sessions used keeps the move's name until its reset, which runs with the
        // next command, so two cancels at once ended each other's sessions here (CI: 57P01 in one of them).
        var connection = await OpenAsync(new NpgsqlConnectionStringBuilder(targetConnectionString) { Pooling = false }.ConnectionString, ct)
            .ConfigureAwait(false);
        await using var connectionLifetime = connection.ConfigureAwait(false);
        return await CountAsync(connection, "select count(pg_terminate_backend(pid)) from pg_stat_activity " +
                                            "where application_name = $1 and state <> 'idle' and pid <> pg_backend_pid()", MoverSessionName(moveId), ct).ConfigureAwait(false);
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken ct)
    {
        var command = new NpgsqlCommand(sql, connection);
        await using var commandLifetime = command.ConfigureAwait(false);
        await command.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    private static async Task<long> CountAsync(NpgsqlConnection connection, string sql, string name, CancellationToken ct)
    {
        var command = new NpgsqlCommand(sql, connection) { Parameters = { new() { Value = name } } };
        await using var commandLifetime = command.ConfigureAwait(false);
        return (long)(await command.ExecuteScalarAsync(ct).ConfigureAwait(false))!;
    }

    [GeneratedRegex("^[a-z0-9_]{1,40}$")]
    private static partial Regex MoveId();
}

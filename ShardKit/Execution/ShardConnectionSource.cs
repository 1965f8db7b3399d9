using Npgsql;

namespace ShardKit;

/// <summary>
/// Where a pipeline call gets its connection: the session's (kept open, enlisted in its transaction; a read may go to a
/// standby by the session's or the call's <see cref="ReadPolicy"/>), a fresh one from the shard's writer pool (closed after
/// the call; recovery and two-phase steps that need no session), or one the caller already holds (a distributed
/// transaction's participant).
/// </summary>
internal readonly struct ShardConnectionSource
{
    private readonly ShardSession? _session;
    private readonly NpgsqlConnection? _given;
    private readonly ReadPolicy? _policy;

    private ShardConnectionSource(ShardSession? session, NpgsqlConnection? given, ReadPolicy? policy = null)
    {
        _session = session;
        _given = given;
        _policy = policy;
    }

    /// <summary>A fresh connection from the shard's pool, closed after the call.</summary>
    public static ShardConnectionSource Pooled => default;

    /// <summary>The session's connections; reads follow <paramref name="policy"/>, or the session's policy when null.</summary>
    public static ShardConnectionSource Of(ShardSession session, ReadPolicy? policy = null) => new(session, null, policy);

    public static ShardConnectionSource Given(NpgsqlConnection connection) => new(null, connection);

    /// <summary>Another attempt can get a connection in the same state: not inside a transaction, not a given connection.</summary>
    public bool MayRetry => _given is null && _session?.InTransaction != true;

    /// <summary>
    /// Whether the shard's breaker is asked first. A given connection is open already, and what runs on it (the end of
    /// a transaction that holds work there) must be attempted whatever the breaker thinks of new connections.
    /// </summary>
    public bool Admits => _given is null;

    public ShardRetryOptions Retries(ShardSet shards) => _session?.Retries ?? shards.Settings.Retries;

    /// <summary>The server of one attempt: chosen by the session for its own commands, the writer otherwise.</summary>
    public ShardServer Choose(int shard, in ShardCommand command) =>
        _session?.Choose(shard, command.IsWrite, _policy) ?? ShardServer.Primary;

    /// <summary>The connection of one attempt; <c>carriesSetup</c>: the command sends its transaction's pending setup itself.</summary>
    public async ValueTask<NpgsqlConnection> OpenAsync(ShardSet shards, int shard, ShardServer server, bool carriesSetup, bool async,
        CancellationToken cancellationToken)
    {
        if (_given is not null)
        {
            return _given;
        }

        if (_session is not null)
        {
            return async
                ? await _session.OpenAsync(shard, server, cancellationToken, carriesSetup).ConfigureAwait(false)
                : _session.Open(shard, server, carriesSetup);
        }

        return async
            ? await shards.DataSourceAt(shard).OpenConnectionAsync(cancellationToken).ConfigureAwait(false)
            : shards.DataSourceAt(shard).OpenConnection();
    }

    /// <summary>A write of the session's own outside a transaction committed: the session remembers where (read-your-writes).</summary>
    public ValueTask WroteAsync(int shard, in ShardCommand command, NpgsqlConnection connection, bool async, CancellationToken cancellationToken) =>
        command.IsWrite && _session is { InTransaction: false } session
            ? session.WroteAsync(shard, connection, async, cancellationToken)
            : ValueTask.CompletedTask;

    /// <summary>Closes a pooled connection after its call; the session's and given ones stay open.</summary>
    public ValueTask ReleaseAsync(NpgsqlConnection connection, bool async)
    {
        if (_given is not null || _session is not null)
        {
            return ValueTask.CompletedTask;
        }

        if (async)
        {
            return connection.DisposeAsync();
        }

        connection.Dispose();
        return ValueTask.CompletedTask;
    }

    public Exception? Translate(int shard, PostgresException error) =>
        _session?.Enlistment is { IsActive: true } enlistment ? enlistment.Translate(shard, error) : null;
}

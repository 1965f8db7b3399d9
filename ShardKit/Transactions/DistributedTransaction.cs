using System.Data;
using Npgsql;

namespace ShardKit;

/// <summary>
/// A transaction over any number of shards, committed atomically with PostgreSQL two-phase commit. While it is open,
/// commands on its <see cref="ShardedConnection"/> route by key as usual; each shard a command reaches starts its own
/// transaction there on first use. <see cref="CommitAsync"/> commits a single shard plainly and several with
/// <c>PREPARE TRANSACTION</c>, a decision logged on the coordinator shard (committed together with the coordinator's own
/// part when it took part), and <c>COMMIT PREPARED</c>. Disposing it without a commit rolls back everywhere.
/// </summary>
public sealed partial class DistributedTransaction : IAsyncDisposable, IDisposable, IShardEnlistment
{
    private readonly ShardSession _session;
    private readonly DistributedContext _context;
    private readonly NpgsqlTransaction?[] _transactions;
    private readonly NpgsqlConnection?[] _participants;
    private readonly bool[] _setupPending;
    private volatile int _state;

    internal DistributedTransaction(ShardSession session, DistributedContext context, IsolationLevel isolationLevel)
    {
        _session = session;
        _context = context;
        IsolationLevel = isolationLevel;
        _transactions = new NpgsqlTransaction?[session.Shards.Count];
        _setupPending = new bool[session.Shards.Count];
        _participants = new NpgsqlConnection?[session.Shards.Count];
        session.Enlist(this);
    }

    private enum Phase
    {
        Active,
        Committing,
        Committed,
        RolledBack,
        InDoubt,
    }

    /// <summary>The isolation level of each shard's transaction.</summary>
    public IsolationLevel IsolationLevel { get; }

    /// <summary>The shards this transaction has written or read so far, in shard order.</summary>
    public IReadOnlyList<string> Shards => TouchedShards().Select(_session.Shards.NameOf).ToArray();

    /// <summary>The global id of the two-phase commit once it has started (<c>shardkit:…</c>); null before.</summary>
    public string? GlobalId { get; private set; }

    /// <summary>True while commands may still join the transaction.</summary>
    internal bool IsActive => _state == (int)Phase.Active;

    private ShardSet Set => _session.Shards;

    private DistributedSettings Settings => _context.Settings;

    /// <summary>
    /// Starts this transaction on <paramref name="shard"/> the first time a command reaches it. Npgsql sends the BEGIN
    /// with that command; the lock bound (<c>SET LOCAL lock_timeout</c>) goes with it too when the command carries it
    /// (a write ShardKit sends itself), and otherwise costs a round trip of its own here.
    /// </summary>
    async ValueTask IShardEnlistment.EnlistAsync(int shard, NpgsqlConnection connection, bool carriesSetup, CancellationToken cancellationToken)
    {
        if (_transactions[shard] is null)
        {
            _transactions[shard] = await connection.BeginTransactionAsync(IsolationLevel, cancellationToken).ConfigureAwait(false);
            _participants[shard] = connection;
            _setupPending[shard] = Settings.LockTimeoutSql is not null;
        }

        if (_setupPending[shard] && !carriesSetup)
        {
            var command = new NpgsqlCommand(Settings.LockTimeoutSql, connection, _transactions[shard]);
            await using var commandScope = command.ConfigureAwait(false);
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            _setupPending[shard] = false;
        }
    }

    /// <summary>The synchronous twin of <see cref="IShardEnlistment.EnlistAsync"/>.</summary>
    void IShardEnlistment.Enlist(int shard, NpgsqlConnection connection, bool carriesSetup)
    {
        if (!IsActive)
        {
            return;
        }

        if (_transactions[shard] is null)
        {
            _transactions[shard] = connection.BeginTransaction(IsolationLevel);
            _participants[shard] = connection;
            _setupPending[shard] = Settings.LockTimeoutSql is not null;
        }

        if (_setupPending[shard] && !carriesSetup)
        {
            using var command = new NpgsqlCommand(Settings.LockTimeoutSql, connection, _transactions[shard]);
            command.ExecuteNonQuery();
            _setupPending[shard] = false;
        }
    }

    // Locks taken on two shards in opposite order wait for each other where no server's deadlock detector sees the
    // cycle, so each shard's transaction bounds its lock waits (SET LOCAL ends with it).
    string? IShardEnlistment.PendingSetup(int shard) => _setupPending[shard] ? Settings.LockTimeoutSql : null;

    void IShardEnlistment.SetupSent(int shard) => _setupPending[shard] = false;

    /// <summary>True when this transaction has started on <paramref name="shard"/>.</summary>
    internal bool Touches(int shard) => _transactions[shard] is not null;

    bool IShardEnlistment.IsActive => IsActive;

    bool IShardEnlistment.Touches(int shard) => Touches(shard);

    // A lock wait that ran out inside a distributed transaction is most likely a deadlock across shards, which no server
    // detects: the caller gets a typed, retryable error naming the shard instead of the server's bare 55P03.
    Exception? IShardEnlistment.Translate(int shard, PostgresException error) =>
        DistributedLockTimeoutException.Matches(error) ? new DistributedLockTimeoutException(Set.NameOf(shard), Settings.LockTimeout, error) : null;

    /// <summary>Rolls back on every shard it touched.</summary>
    public async Task RollbackAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfNotActive();
        _state = (int)Phase.RolledBack;
        using var activity = ShardKitTelemetry.StartDistributed("rollback", TouchedShards().Length);
        try
        {
            await Task.WhenAll(TouchedShards().Select(shard => RollbackOnAsync(shard, cancellationToken))).ConfigureAwait(false);
            ShardKitTelemetry.RecordOutcome(activity, "rolled_back");
        }
        finally
        {
            _session.EndEnlistment(this);
        }
    }

    /// <summary>Rolls back unless committed, and releases the transaction.</summary>
    public async ValueTask DisposeAsync()
    {
        if (IsActive)
        {
            await RollbackAsync().ConfigureAwait(false);
        }

        _session.EndEnlistment(this);
    }

    /// <summary>Rolls back unless committed, and releases the transaction.</summary>
    public void Dispose()
    {
        if (IsActive)
        {
            _state = (int)Phase.RolledBack;
            foreach (var shard in TouchedShards())
            {
                try
                {
                    _transactions[shard]!.Dispose();
                }
                catch (Exception e) when (ShardErrors.FromShard(e) || e is InvalidOperationException)
                {
                    // A broken connection's transaction is already gone on the server.
                }
            }

            ShardKitTelemetry.RecordOutcome(null, "rolled_back");
        }

        _session.EndEnlistment(this);
    }

    // Ends this transaction's session state on a shard, whatever happened to it: a session left in a transaction refuses
    // every later command once it has failed (25P02), makes the next BEGIN fail, and keeps its locks until it closes.
    private async Task RollbackOnAsync(int shard, CancellationToken cancellationToken)
    {
        try
        {
            await _transactions[shard]!.RollbackAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The session's state is unknown (broken connection, cancelled rollback): close the connection. The pool rolls a
            // live session back or discards a broken one (whose transaction the server already ended), and the next
            // command on this shard opens a clean connection.
            await CloseParticipantAsync(shard).ConfigureAwait(false);
            if (e is OperationCanceledException)
            {
                throw;
            }
        }
    }

    private async Task CloseParticipantAsync(int shard)
    {
        try
        {
            await _participants[shard]!.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is InvalidOperationException)
        {
            // Closing a broken connection may fail; either way it no longer holds a transaction.
        }
    }

    private int[] TouchedShards()
    {
        var touched = new List<int>(2);
        for (var i = 0; i < _transactions.Length; i++)
        {
            if (_transactions[i] is not null)
            {
                touched.Add(i);
            }
        }

        return touched.ToArray();
    }

    private void ThrowIfNotActive()
    {
        if (!IsActive)
        {
            throw new InvalidOperationException(
                $"This distributed transaction is already {(Phase)_state switch { Phase.Committing => "committing", Phase.Committed => "committed", Phase.RolledBack => "rolled back", _ => "finished (in doubt)" }}; start a new one.");
        }
    }
}

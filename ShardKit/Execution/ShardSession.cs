using System.Data;
using Npgsql;

namespace ShardKit;

/// <summary>
/// One connection's hold on the shards: an open connection per shard server (opened lazily from its pool and reused
/// until disposal), the one-operation-at-a-time guard, the retry options, the read policy and the positions of its
/// writes, and what a transaction pins: the one shard of a single-shard transaction, or the enlistment every connection
/// of a distributed one joins. Owned and disposed by the public connection.
/// </summary>
internal sealed partial class ShardSession : IAsyncDisposable, IDisposable
{
    private readonly NpgsqlConnection?[]?[] _connections; // [shard][server slot: 0 the writer, i + 1 standby i], made on first use
    private WrittenPositions? _written;
    private ShardRetryOptions? _retries;
    private bool _disposed;
    private int _busy;

    public ShardSession(ShardSet shards)
    {
        Shards = shards;
        _connections = new NpgsqlConnection?[]?[shards.Map.Shards.Count];
    }

    /// <summary>The WAL position of this session's last write per shard (and of tokens it resumed from).</summary>
    public WrittenPositions Written => Volatile.Read(ref _written) ?? LazyInitializer.EnsureInitialized(ref _written, () => new WrittenPositions(Shards.Map));

    // A session is made per connection and most touch one shard: each shard's slots are made when it is first used.
    private NpgsqlConnection?[] ServersOf(int shard) => Volatile.Read(ref _connections[shard]) ?? FirstUse(shard);

    private NpgsqlConnection?[] FirstUse(int shard)
    {
        Interlocked.CompareExchange(ref _connections[shard], new NpgsqlConnection?[1 + Shards.Map.Shards[shard].Standbys.Count], null);
        return _connections[shard]!;
    }

    public ShardSet Shards { get; }

    /// <summary>The single-shard transaction this session is pinned to, if any.</summary>
    public PinnedTransaction? Pinned { get; private set; }

    /// <summary>The distributed transaction every connection joins, if any.</summary>
    public IShardEnlistment? Enlistment { get; private set; }

    public bool InTransaction => Pinned is not null || Enlistment is not null;

    public bool IsDisposed => Volatile.Read(ref _disposed);

    /// <summary>How this session retries transient failures; starts as the data source's setting.</summary>
    public ShardRetryOptions Retries
    {
        get => _retries ?? Shards.Settings.Retries;
        set => _retries = value ?? throw new ArgumentNullException(nameof(value));
    }

    public void Pin(PinnedTransaction transaction) => Pinned = transaction;

    public void Unpin(object owner)
    {
        if (ReferenceEquals(Pinned?.Owner, owner))
        {
            Pinned = null;
        }
    }

    public void Enlist(IShardEnlistment enlistment) => Enlistment = enlistment;

    public void EndEnlistment(IShardEnlistment enlistment)
    {
        if (ReferenceEquals(Enlistment, enlistment))
        {
            Enlistment = null;
        }
    }

    /// <summary>The pinned transaction's Npgsql transaction when it is on <paramref name="shard"/>.</summary>
    public NpgsqlTransaction? TransactionOn(int shard) => Pinned is { } pinned && pinned.Shard == shard ? pinned.Inner : null;

    /// <summary>
    /// Marks the start of one logical operation (a call, or a stream until it ends) and refuses a second one while it
    /// runs: two operations at once would share the per-shard connections. The shards of one operation may still open
    /// in parallel. Dispose the returned scope when the operation ends.
    /// </summary>
    public OperationScope EnterOperation()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            throw new ShardedConnectionBusyException();
        }

        return new OperationScope(this);
    }

    /// <summary>The session's open connection to <paramref name="shard"/>'s writer, enlisted in the distributed transaction if one is active.</summary>
    public ValueTask<NpgsqlConnection> OpenAsync(int shard, CancellationToken cancellationToken) =>
        OpenAsync(shard, ShardServer.Primary, cancellationToken);

    /// <summary>The synchronous twin of <see cref="OpenAsync(int, CancellationToken)"/>.</summary>
    public NpgsqlConnection Open(int shard) => Open(shard, ShardServer.Primary);

    /// <summary>The session's open connection to one server of <paramref name="shard"/>; only the writer's joins a distributed transaction.</summary>
    /// <remarks>
    /// With <c>carriesSetup</c> the caller's command sends the transaction's pending setup statement itself, in its own
    /// round trip; otherwise the enlistment sends it before the connection is returned.
    /// </remarks>
    public async ValueTask<NpgsqlConnection> OpenAsync(int shard, ShardServer server, CancellationToken cancellationToken, bool carriesSetup = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var connection = Volatile.Read(ref ServersOf(shard)[server.Slot]);
        if (connection is not { State: ConnectionState.Open })
        {
            ThrowIfTransactionLost(shard, server);
            var opened = await Shards.DataSourceAt(shard, server).OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            if (!TryStore(shard, server, connection, opened))
            {
                await opened.DisposeAsync().ConfigureAwait(false);
                throw StoreRefused();
            }

            if (connection is not null)
            {
                await connection.DisposeAsync().ConfigureAwait(false);
            }

            connection = opened;
        }

        if (server.IsPrimary && Enlistment is { IsActive: true } enlistment)
        {
            await enlistment.EnlistAsync(shard, connection, carriesSetup, cancellationToken).ConfigureAwait(false);
        }

        return connection;
    }

    /// <summary>The synchronous twin of <see cref="OpenAsync(int, ShardServer, CancellationToken, bool)"/>.</summary>
    public NpgsqlConnection Open(int shard, ShardServer server, bool carriesSetup = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var connection = Volatile.Read(ref ServersOf(shard)[server.Slot]);
        if (connection is not { State: ConnectionState.Open })
        {
            ThrowIfTransactionLost(shard, server);
            var opened = Shards.DataSourceAt(shard, server).OpenConnection();
            if (!TryStore(shard, server, connection, opened))
            {
                opened.Dispose();
                throw StoreRefused();
            }

            connection?.Dispose();
            connection = opened;
        }

        if (server.IsPrimary && Enlistment is { IsActive: true } enlistment)
        {
            enlistment.Enlist(shard, connection, carriesSetup);
        }

        return connection;
    }

    // Every connection opened ends up in its slot or disposed: the slot changes only from what this call saw, and a
    // connection stored while DisposeAsync ran is taken back here (whichever side takes it from the slot disposes it).
    private bool TryStore(int shard, ShardServer server, NpgsqlConnection? seen, NpgsqlConnection opened)
    {
        ref var slot = ref ServersOf(shard)[server.Slot];
        if (Interlocked.CompareExchange(ref slot, opened, seen) != seen)
        {
            return false;
        }

        return !Volatile.Read(ref _disposed) || Interlocked.CompareExchange(ref slot, null, opened) != opened;
    }

    private Exception StoreRefused() =>
        Volatile.Read(ref _disposed) ? new ObjectDisposedException(GetType().FullName) : new ShardedConnectionBusyException();

    private void ThrowIfTransactionLost(int shard, ShardServer server)
    {
        if (!server.IsPrimary)
        {
            return; // no transaction runs on a standby
        }

        var connections = ServersOf(shard);
        if (Enlistment is { IsActive: true } enlistment && enlistment.Touches(shard) && connections[0] is not null)
        {
            throw new ShardKitException(
                $"The connection to shard '{Shards.NameOf(shard)}' was lost inside the distributed transaction; its work " +
                "there is gone. Roll the transaction back (or dispose it) and start again.");
        }

        if (Pinned is { } pinned && pinned.Shard == shard && connections[0] is not null)
        {
            throw new ShardRoutingException(
                $"The connection to shard '{Shards.NameOf(shard)}' was lost inside its transaction; the transaction is gone. " +
                "Dispose it and start again.");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        Volatile.Write(ref _disposed, true);
        if (Pinned?.Owner is IAsyncDisposable pinned)
        {
            await pinned.DisposeAsync().ConfigureAwait(false);
        }

        if (Enlistment is { } enlistment)
        {
            await enlistment.DisposeAsync().ConfigureAwait(false);
        }

        foreach (var servers in _connections)
        {
            for (var slot = 0; slot < (servers?.Length ?? 0); slot++)
            {
                if (Interlocked.Exchange(ref servers![slot], null) is { } connection)
                {
                    await connection.DisposeAsync().ConfigureAwait(false);
                }
            }
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        Volatile.Write(ref _disposed, true);
        (Pinned?.Owner as IDisposable)?.Dispose();
        Enlistment?.Dispose();
        foreach (var servers in _connections)
        {
            for (var slot = 0; slot < (servers?.Length ?? 0); slot++)
            {
                Interlocked.Exchange(ref servers![slot], null)?.Dispose();
            }
        }
    }

    /// <summary>Ends the operation begun by <see cref="EnterOperation"/>; the default value does nothing.</summary>
    internal readonly struct OperationScope(ShardSession? session) : IDisposable
    {
        public void Dispose()
        {
            if (session is not null)
            {
                Volatile.Write(ref session._busy, 0);
            }
        }
    }
}

using System.Data;
using Npgsql;

namespace ShardKit;

/// <summary>
/// A transaction on one shard. While it is open, commands on its <see cref="ShardedConnection"/> are routed exactly as
/// outside it: a command whose key belongs elsewhere is refused before touching any database, and only a command
/// that names no key at all (no typed key, no parameter named like a known <c>[ShardKey]</c>) goes to its shard.
/// Disposing it without <see cref="CommitAsync"/> rolls back.
/// </summary>
public sealed class ShardTransaction : IDbTransaction, IAsyncDisposable
{
    private readonly ShardSession _session;

    internal ShardTransaction(ShardSession session, int shardIndex, NpgsqlTransaction inner)
    {
        _session = session;
        ShardIndex = shardIndex;
        MapEpoch = session.Shards.Map.Epoch;
        Inner = inner;
        session.Pin(new PinnedTransaction(shardIndex, inner, this));
    }

    /// <summary>The name of the shard this transaction runs on.</summary>
    public string Shard => _session.Shards.NameOf(ShardIndex);

    /// <summary>The shard's own connection.</summary>
    public IDbConnection? Connection => Inner.Connection;

    /// <inheritdoc />
    public IsolationLevel IsolationLevel => Inner.IsolationLevel;

    internal int ShardIndex { get; }

    /// <summary>The map epoch the transaction began under; a newer map may place its keys elsewhere.</summary>
    internal long MapEpoch { get; }

    internal NpgsqlTransaction Inner { get; }

    /// <summary>Commits the transaction on its shard.</summary>
    public async Task CommitAsync(CancellationToken cancellationToken = default)
    {
        var connection = Inner.Connection; // Npgsql lets go of it at the commit
        try
        {
            await Inner.CommitAsync(cancellationToken).ConfigureAwait(false);
            _session.Unpin(this);
            if (connection is not null)
            {
                await _session.WroteAsync(ShardIndex, connection, async: true, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            _session.Unpin(this);
        }
    }

    /// <summary>Rolls the transaction back on its shard.</summary>
    public async Task RollbackAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            await Inner.RollbackAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _session.Unpin(this);
        }
    }

    /// <inheritdoc />
    public void Commit()
    {
        var connection = Inner.Connection; // Npgsql lets go of it at the commit
        try
        {
            Inner.Commit();
            _session.Unpin(this);
            if (connection is not null)
            {
                _session.WroteAsync(ShardIndex, connection, async: false, CancellationToken.None).GetAwaiter().GetResult();
            }
        }
        finally
        {
            _session.Unpin(this);
        }
    }

    /// <inheritdoc />
    public void Rollback()
    {
        try
        {
            Inner.Rollback();
        }
        finally
        {
            _session.Unpin(this);
        }
    }

    /// <summary>Rolls back unless committed, and releases the transaction.</summary>
    public async ValueTask DisposeAsync()
    {
        _session.Unpin(this);
        await Inner.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Rolls back unless committed, and releases the transaction.</summary>
    public void Dispose()
    {
        _session.Unpin(this);
        Inner.Dispose();
    }
}

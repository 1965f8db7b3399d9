using Npgsql;

namespace ShardKit;

/// <summary>
/// A transaction spanning shards that a session's connections join as they open (the distributed transaction). The
/// session asks it to enlist each connection it hands out, and lets it name errors that mean something inside it.
/// </summary>
internal interface IShardEnlistment : IAsyncDisposable, IDisposable
{
    /// <summary>Still taking work (not committing or finished).</summary>
    bool IsActive { get; }

    /// <summary>Whether the transaction already holds work on <paramref name="shard"/>.</summary>
    bool Touches(int shard);

    ValueTask EnlistAsync(int shard, NpgsqlConnection connection, CancellationToken cancellationToken);

    void Enlist(int shard, NpgsqlConnection connection);

    /// <summary>The error to surface instead of <paramref name="error"/> on <paramref name="shard"/>, or null to keep it.</summary>
    Exception? Translate(int shard, PostgresException error);
}

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

    /// <summary>
    /// Joins <paramref name="connection"/> to the transaction on <paramref name="shard"/> (the first time) and makes sure
    /// the transaction's setup statement has run there, unless <paramref name="carriesSetup"/>: then it stays pending
    /// for the caller's command to send in its own round trip (<see cref="PendingSetup"/>, then <see cref="SetupSent"/>).
    /// </summary>
    ValueTask EnlistAsync(int shard, NpgsqlConnection connection, bool carriesSetup, CancellationToken cancellationToken);

    void Enlist(int shard, NpgsqlConnection connection, bool carriesSetup);

    /// <summary>The statement still to run first on <paramref name="shard"/> in this transaction, or null.</summary>
    string? PendingSetup(int shard);

    /// <summary>A command that carried <see cref="PendingSetup"/> succeeded: the statement ran.</summary>
    void SetupSent(int shard);

    /// <summary>The error to surface instead of <paramref name="error"/> on <paramref name="shard"/>, or null to keep it.</summary>
    Exception? Translate(int shard, PostgresException error);
}

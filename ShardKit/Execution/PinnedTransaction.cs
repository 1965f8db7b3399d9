using Npgsql;

namespace ShardKit;

/// <summary>
/// A single-shard transaction a session is pinned to: its shard, the Npgsql transaction, and the public object that
/// owns it (disposed with the session).
/// </summary>
internal sealed record PinnedTransaction(int Shard, NpgsqlTransaction Inner, object Owner);

using Npgsql;

namespace ShardKit;

/// <summary>A shard whose COPY completed, with the open transaction that holds its rows until the commit step.</summary>
internal sealed record ShardCommitTarget(int Shard, string Name, NpgsqlTransaction Transaction);

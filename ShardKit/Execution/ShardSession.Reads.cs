using Npgsql;
using NpgsqlTypes;

namespace ShardKit;

/// <summary>Where the session's reads go: its read policy, the positions of its writes, and the choice of a server per command.</summary>
internal sealed partial class ShardSession
{
    // The insert position: at or past the end of the commit record just inserted, whether or not it was written out yet
    // (pg_current_wal_lsn() may lag it with synchronous_commit off).
    private const string WritePositionSql = "select pg_current_wal_insert_lsn()";
    private readonly int _firstStandby = Random.Shared.Next(1 << 16); // spreads connections over a shard's standbys
    private ReadPolicy? _readPolicy;
    private bool? _readYourWrites;

    /// <summary>Where this session's reads go; starts as the data source's setting.</summary>
    public ReadPolicy ReadPolicy
    {
        get => _readPolicy ?? Shards.Settings.Replicas.ReadPolicy;
        set => _readPolicy = Enum.IsDefined(value) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "Use Primary, PreferStandby or Standby.");
    }

    /// <summary>Whether reads wait for this session's writes to reach a standby; starts as the data source's setting.</summary>
    public bool ReadYourWrites
    {
        get => _readYourWrites ?? Shards.Settings.Replicas.ReadYourWrites;
        set => _readYourWrites = value;
    }

    /// <summary>
    /// The one place a command's server is chosen: writes, anything inside a transaction and reads under
    /// <see cref="ReadPolicy.Primary"/> run on the writer; other reads on a standby that qualifies (see <see cref="ShardReplicas.Choose"/>).
    /// </summary>
    public ShardServer Choose(int shard, bool isWrite, ReadPolicy? policy)
    {
        var replicas = Shards.ReplicasAt(shard);
        if (isWrite || InTransaction || !replicas.HasStandbys && (policy ?? ReadPolicy) != ReadPolicy.Standby)
        {
            return ShardServer.Primary;
        }

        return replicas.Choose(Shards.Settings.Replicas, policy ?? ReadPolicy, ReadYourWrites ? Written[shard] : 0, _firstStandby);
    }

    /// <summary>
    /// After a write or commit on <paramref name="shard"/>, remembers the writer's WAL position (one more statement on
    /// the same connection) when reads of the shard could go to a standby. If that fails the write still stands, and the
    /// shard's reads stay on the primary for this session.
    /// </summary>
    public async ValueTask WroteAsync(int shard, NpgsqlConnection connection, bool async, CancellationToken cancellationToken)
    {
        if (!ReadYourWrites || !Shards.ReplicasAt(shard).HasStandbys)
        {
            return;
        }

        try
        {
            using var command = new NpgsqlCommand(WritePositionSql, connection);
            var position = async ? await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) : command.ExecuteScalar();
            Written.Wrote(shard, (ulong)(NpgsqlLogSequenceNumber)position!);
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is OperationCanceledException)
        {
            Written.Wrote(shard, ulong.MaxValue);
        }
    }
}

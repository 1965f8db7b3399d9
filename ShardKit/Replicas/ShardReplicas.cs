using Npgsql;

namespace ShardKit;

/// <summary>
/// One shard's servers: the primary's pool, its standbys, the primary's last known WAL position, and which server takes
/// writes (the primary, or a standby the background check found promoted). Chooses the server of each read.
/// </summary>
internal sealed class ShardReplicas(ShardInfo shard, NpgsqlDataSource primary, StandbyServer[] standbys)
{
    private int _writer; // slot of the server that takes writes: 0 = the configured primary, i + 1 = promoted standby i
    private long _primaryPosition;

    public ShardInfo Shard => shard;

    public StandbyServer[] Standbys => standbys;

    public bool HasStandbys => standbys.Length > 0;

    /// <summary>The writer's WAL position at the last check (0 before the first).</summary>
    public ulong PrimaryPosition => (ulong)Volatile.Read(ref _primaryPosition);

    /// <summary>The pool writes, transactions and primary reads use.</summary>
    public NpgsqlDataSource Writer => Volatile.Read(ref _writer) is var slot && slot == 0 ? primary : standbys[slot - 1].DataSource;

    /// <summary>The configured primary, whatever takes writes now.</summary>
    public NpgsqlDataSource ConfiguredPrimary => primary;

    public NpgsqlDataSource DataSourceOf(ShardServer server) => server.IsPrimary ? Writer : standbys[server.StandbyIndex].DataSource;

    public StandbyInfo? StandbyOf(ShardServer server) => server.IsPrimary ? null : standbys[server.StandbyIndex].Info;

    public bool IsPromoted(int standby) => Volatile.Read(ref _writer) == standby + 1;

    public void Observed(ulong primaryPosition)
    {
        long seen;
        do
        {
            seen = Volatile.Read(ref _primaryPosition);
        }
        while ((ulong)seen < primaryPosition && Interlocked.CompareExchange(ref _primaryPosition, (long)primaryPosition, seen) != seen);
    }

    /// <summary>Called once a promoted standby takes the writes (the shard set closes the breaker the old primary opened).</summary>
    public Action? Promoted { get; set; }

    /// <summary>The writer stopped answering and standby <paramref name="standby"/> left recovery: it takes writes from now on.</summary>
    public void Promote(int standby)
    {
        Volatile.Write(ref _writer, standby + 1);
        Promoted?.Invoke();
    }

    /// <summary>
    /// The server of one read: a standby that qualifies (starting at <paramref name="start"/>, so one connection keeps to
    /// one standby while it qualifies and connections spread over them), else the primary under
    /// <see cref="ReadPolicy.PreferStandby"/> or <see cref="StandbyUnavailableException"/> under <see cref="ReadPolicy.Standby"/>.
    /// </summary>
    public ShardServer Choose(ReplicaOptions options, ReadPolicy policy, ulong mustHaveReplayed, int start)
    {
        if (policy == ReadPolicy.Primary)
        {
            return ShardServer.Primary;
        }

        for (var i = 0; i < standbys.Length; i++)
        {
            var standby = (start + i) % standbys.Length;
            if (standbys[standby].Reject(options, mustHaveReplayed) is null)
            {
                return ShardServer.OnStandby(standby);
            }
        }

        return policy == ReadPolicy.PreferStandby
            ? ShardServer.Primary
            : throw new StandbyUnavailableException(shard.Name, standbys.Select(s => s.Reject(options, mustHaveReplayed)!).ToArray());
    }
}

using System.Globalization;
using Npgsql;

namespace ShardKit;

/// <summary>One standby of a shard: its pool and the status the background check last found.</summary>
internal sealed class StandbyServer(StandbyInfo info, NpgsqlDataSource dataSource)
{
    private StandbyStatus _status = StandbyStatus.Unknown;

    public StandbyInfo Info => info;

    public NpgsqlDataSource DataSource => dataSource;

    public StandbyStatus Status
    {
        get => Volatile.Read(ref _status);
        set => Volatile.Write(ref _status, value);
    }

    /// <summary>A command could not reach it: no read goes there until the next check finds it again.</summary>
    public void Failed(Exception error) => Status = Status with { Reachable = false, Error = error.GetType().Name };

    /// <summary>Why a read may not use this standby now, or null when it may.</summary>
    public string? Reject(ReplicaOptions options, ulong mustHaveReplayed)
    {
        var status = Status;
        if (!status.Reachable)
        {
            return $"'{info.Name}' is unreachable ({status.Error})";
        }

        if (!status.InRecovery)
        {
            return $"'{info.Name}' is no longer a standby (promoted)";
        }

        if (options.MaxStandbyLagBytes is { } maxBytes && status.LagBytes > maxBytes)
        {
            return string.Create(CultureInfo.InvariantCulture, $"'{info.Name}' is {status.LagBytes} bytes behind (MaxStandbyLagBytes {maxBytes})");
        }

        if (options.MaxStandbyLag is not null && status.LagBytes > 0 && status.LagTime is null)
        {
            return $"'{info.Name}' is behind and has replayed no commit since it started, so how far is unknown (MaxStandbyLag is set)";
        }

        if (options.MaxStandbyLag is { } maxTime && status.LagTime > maxTime)
        {
            return string.Create(CultureInfo.InvariantCulture, $"'{info.Name}' is {status.LagTime!.Value.TotalSeconds:0.0} s behind (MaxStandbyLag {maxTime.TotalSeconds:0.0} s)");
        }

        return status.ReplayPosition < mustHaveReplayed
            ? $"'{info.Name}' has not replayed this connection's last write yet"
            : null;
    }
}

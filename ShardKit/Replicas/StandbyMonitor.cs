using Microsoft.Extensions.Logging;
using Npgsql;
using NpgsqlTypes;

namespace ShardKit;

/// <summary>
/// The background check of every shard with standbys, every <see cref="ReplicaOptions.RefreshInterval"/>: the writer's
/// WAL position, each standby's replay position and lag, and whether a standby was promoted while the writer is gone.
/// Reads only look at what it found last, so no command waits for a standby's answer.
/// </summary>
internal sealed class StandbyMonitor
{
    private static readonly TimeSpan CheckTimeout = TimeSpan.FromSeconds(5);
    private readonly ShardReplicas[] _shards;
    private readonly ReplicaOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public StandbyMonitor(ShardReplicas[] shards, ReplicaOptions options, TimeProvider time, ILogger logger)
    {
        _shards = shards.Where(s => s.HasStandbys).ToArray();
        _options = options;
        _time = time;
        _logger = logger;
    }

    /// <summary>The loop; complete when there is nothing to check or once it stopped. Never faults.</summary>
    public Task Running { get; private set; } = Task.CompletedTask;

    public void Start(CancellationToken stopping)
    {
        if (_shards.Length > 0)
        {
            Running = Task.Run(() => LoopAsync(stopping), CancellationToken.None);
        }
    }

    /// <summary>Checks every shard with standbys once, now (tests call it to see a change without waiting for the loop).</summary>
    public Task RefreshAsync(CancellationToken cancellationToken) =>
        Task.WhenAll(_shards.Select(shard => RefreshAsync(shard, cancellationToken)));

    private async Task LoopAsync(CancellationToken stopping)
    {
        try
        {
            while (!stopping.IsCancellationRequested)
            {
                await RefreshAsync(stopping).ConfigureAwait(false);
                await Task.Delay(_options.RefreshInterval, _time, stopping).ConfigureAwait(false);
            }
        }
        catch (Exception) when (stopping.IsCancellationRequested)
        {
            // Stopped with the data source; a check cut short may end in any error, none of them matters now.
        }
    }

    private async Task RefreshAsync(ShardReplicas shard, CancellationToken cancellationToken)
    {
        var writer = await CheckWriterAsync(shard.Writer, cancellationToken).ConfigureAwait(false);
        if (writer is { } position)
        {
            shard.Observed(position);
        }

        await Task.WhenAll(shard.Standbys.Select(async standby =>
            standby.Status = await CheckStandbyAsync(standby, shard.PrimaryPosition, cancellationToken).ConfigureAwait(false))).ConfigureAwait(false);
        if (writer is null)
        {
            FollowPromotion(shard);
        }
    }

    // The writer is gone (or is in recovery itself): a standby that left recovery was promoted and takes the writes.
    private void FollowPromotion(ShardReplicas shard)
    {
        for (var i = 0; i < shard.Standbys.Length; i++)
        {
            if (shard.Standbys[i].Status is { Reachable: true, InRecovery: false } && !shard.IsPromoted(i))
            {
                shard.Promote(i);
                ShardKitLog.StandbyPromoted(_logger, shard.Shard.Name, shard.Standbys[i].Info.Name);
                return;
            }
        }
    }

    // The writer's insert position: it is at or past the end of every commit record already inserted, written or not.
    private async Task<ulong?> CheckWriterAsync(NpgsqlDataSource writer, CancellationToken cancellationToken)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(CheckTimeout);
            var command = writer.CreateCommand("select case when pg_is_in_recovery() then null else pg_current_wal_insert_lsn() end");
            await using var _ = command.ConfigureAwait(false);
            var position = await command.ExecuteScalarAsync(timeout.Token).ConfigureAwait(false);
            return position is NpgsqlLogSequenceNumber lsn ? (ulong)lsn : null;
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            return null; // down, refusing, or too slow: the standbys decide what happens next
        }
    }

    private async Task<StandbyStatus> CheckStandbyAsync(StandbyServer standby, ulong primaryPosition, CancellationToken cancellationToken)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(CheckTimeout);
            var command = standby.DataSource.CreateCommand(
                "select pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn(), '0/0'), " +
                "extract(epoch from now() - pg_last_xact_replay_timestamp())::float8");
            await using var _ = command.ConfigureAwait(false);
            var reader = await command.ExecuteReaderAsync(timeout.Token).ConfigureAwait(false);
            await using var __ = reader.ConfigureAwait(false);
            await reader.ReadAsync(timeout.Token).ConfigureAwait(false);
            var inRecovery = reader.GetBoolean(0);
            var replayed = (ulong)reader.GetFieldValue<NpgsqlLogSequenceNumber>(1);
            var behind = replayed < primaryPosition;
            // Time since the last replayed commit is lag only while something is left to replay: an idle primary sends nothing.
            TimeSpan? lagTime = !behind ? TimeSpan.Zero : reader.IsDBNull(2) ? null : TimeSpan.FromSeconds(Math.Max(0, reader.GetDouble(2)));
            return new StandbyStatus(true, inRecovery, replayed, behind ? (long)(primaryPosition - replayed) : 0, lagTime);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            return new StandbyStatus(false, true, standby.Status.ReplayPosition, null, null, e.GetType().Name);
        }
    }
}

using System.Text;
using Npgsql;
using Npgsql.Replication;
using Npgsql.Replication.PgOutput;
using Npgsql.Replication.PgOutput.Messages;
using NpgsqlTypes;

namespace ShardKit;

internal sealed partial class BucketReplication
{
    private const string MarkerPrefix = "shardkit.move";
    private static readonly TimeSpan ConfirmWait = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Streams the slot from its confirmed position and applies the changes of rows in <paramref name="buckets"/> to the
    /// target (see <see cref="ChangeApplier"/>), one target transaction per source transaction, confirming each applied
    /// transaction to the slot. Stops at a marker it writes into the source's WAL (a non-transactional logical message)
    /// after <paramref name="until"/>: every transaction committed before <paramref name="until"/> is then applied.
    /// Replaying from an older position (after a cancelled catch-up or a crash) is harmless. Needs, on the source, the
    /// REPLICATION attribute, EXECUTE on <c>pg_logical_emit_message</c> (for the marker; every role has it) and SELECT
    /// on the tables (an unchanged TOAST value the target cannot supply is read there); on the target, INSERT, UPDATE,
    /// DELETE and SELECT.
    /// </summary>
    /// <param name="targetConnectionString">The target shard.</param>
    /// <param name="buckets">The moving buckets.</param>
    /// <param name="bucketCount">The number of buckets the hash space is cut into.</param>
    /// <param name="ct">Stops streaming; the target keeps every source transaction applied so far, whole.</param>
    /// <param name="until">A source position, e.g. <c>pg_current_wal_lsn()</c> read when writes to the buckets stopped.</param>
    public async Task<CatchUp> CatchUpAsync(string targetConnectionString, IReadOnlyCollection<int> buckets, int bucketCount,
        NpgsqlLogSequenceNumber until, CancellationToken ct)
    {
        ValidateBuckets(buckets, bucketCount);

        // A slot streams to one connection at a time; the exporter, if still open, lets go of its snapshot first.
        await ReleaseSnapshotAsync().ConfigureAwait(false);
        var target = await OpenTargetAsync(targetConnectionString, ct).ConfigureAwait(false);
        await using var targetLifetime = target.ConfigureAwait(false);
        var applier = new ChangeApplier(_source, target, _tables, buckets, bucketCount);
        await using var applierLifetime = applier.ConfigureAwait(false);
        var nonce = Guid.NewGuid().ToString("N");
        var marker = await EmitMarkerAsync(nonce, ct).ConfigureAwait(false);
        if (marker < until)
        {
            throw new ArgumentOutOfRangeException(nameof(until), $"Position {until} is ahead of the source's WAL ({marker}); pass a position the source has written.");
        }

        await WaitSlotFreeAsync(ct).ConfigureAwait(false);
        var replication = new LogicalReplicationConnection(_source);
        await using var replicationLifetime = replication.ConfigureAwait(false);
        await replication.Open(ct).ConfigureAwait(false);
        var last = default(NpgsqlLogSequenceNumber);
        await foreach (var message in replication.StartReplication(new PgOutputReplicationSlot(SlotName), Options(SlotName), ct).ConfigureAwait(false))
        {
            switch (message)
            {
                case RelationMessage relation:
                    applier.Relation(relation);
                    break;
                case CommitMessage commit:
                    await applier.CommitAsync(ct).ConfigureAwait(false);
                    last = commit.TransactionEndLsn;
                    replication.SetReplicationStatus(last);
                    break;
                case LogicalDecodingMessage logical when logical.Prefix == MarkerPrefix:
                    if (await ReadAsync(logical, ct).ConfigureAwait(false) != nonce)
                    {
                        break; // a marker of an earlier catch-up of this or another move
                    }

                    last = logical.MessageLsn > last ? logical.MessageLsn : last;
                    replication.SetReplicationStatus(last);
                    await replication.SendStatusUpdate(ct).ConfigureAwait(false);
                    await WaitConfirmedAsync(last, ct).ConfigureAwait(false);
                    return new CatchUp(applier.Changes, last);
                default:
                    await applier.ApplyAsync(message, ct).ConfigureAwait(false);
                    break;
            }
        }

        throw new BucketMoveException($"The source ended replication slot {SlotName} before catch-up reached its marker; run catch-up again.");
    }

    private async Task<NpgsqlLogSequenceNumber> EmitMarkerAsync(string nonce, CancellationToken ct)
    {
        var connection = await OpenAsync(_source, ct).ConfigureAwait(false);
        await using var connectionLifetime = connection.ConfigureAwait(false);
        var command = new NpgsqlCommand("select pg_logical_emit_message(false, $1, $2)", connection)
        {
            Parameters = { new() { Value = MarkerPrefix }, new() { Value = nonce } },
        };
        await using var commandLifetime = command.ConfigureAwait(false);
        return (NpgsqlLogSequenceNumber)(await command.ExecuteScalarAsync(ct).ConfigureAwait(false))!;
    }

    private static async Task<string> ReadAsync(LogicalDecodingMessage message, CancellationToken ct)
    {
        using var reader = new StreamReader(message.Data, Encoding.UTF8);
        return await reader.ReadToEndAsync(ct).ConfigureAwait(false);
    }

    // After a cancelled or crashed catch-up the old walsender may hold the slot for a moment; streaming it then fails.
    private async Task WaitSlotFreeAsync(CancellationToken ct)
    {
        var connection = await OpenAsync(_source, ct).ConfigureAwait(false);
        await using var connectionLifetime = connection.ConfigureAwait(false);
        var deadline = DateTime.UtcNow + ConfirmWait;
        while (await CountAsync(connection, "select count(*) from pg_replication_slots where slot_name = $1 and active_pid is not null",
                   SlotName, ct).ConfigureAwait(false) > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20, ct).ConfigureAwait(false);
        }
    }

    // The walsender takes a status update asynchronously; a resume must not start before the confirmed position.
    private async Task WaitConfirmedAsync(NpgsqlLogSequenceNumber lsn, CancellationToken ct)
    {
        var connection = await OpenAsync(_source, ct).ConfigureAwait(false);
        await using var connectionLifetime = connection.ConfigureAwait(false);
        var deadline = DateTime.UtcNow + ConfirmWait;
        while (true)
        {
            var command = new NpgsqlCommand(
                "select confirmed_flush_lsn >= $2 from pg_replication_slots where slot_name = $1", connection)
            {
                Parameters = { new() { Value = SlotName }, new() { Value = lsn, NpgsqlDbType = NpgsqlDbType.PgLsn } },
            };
            await using var commandLifetime = command.ConfigureAwait(false);
            if (await command.ExecuteScalarAsync(ct).ConfigureAwait(false) is true || DateTime.UtcNow > deadline)
            {
                return;
            }

            await Task.Delay(20, ct).ConfigureAwait(false);
        }
    }
}

using System.Text;
using System.Text.RegularExpressions;
using Npgsql;
using Npgsql.Replication;
using Npgsql.Replication.PgOutput;
using Npgsql.Replication.PgOutput.Messages;
using NpgsqlTypes;

namespace ShardKit;

internal sealed partial class BucketReplication
{
    // Source transactions applied per target transaction.
    private const int CommitGroup = 256;

    private const string MarkerPrefix = "shardkit.move";
    private static readonly TimeSpan ConfirmWait = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Streams the slot and applies the changes of rows in <paramref name="buckets"/> to the target (see
    /// <see cref="ChangeApplier"/>), many source transactions per target transaction, telling the slot a position only
    /// once the target committed everything before it. Returns at a marker it writes into the source's WAL (a
    /// non-transactional logical message) after <paramref name="until"/>: every transaction committed before
    /// <paramref name="until"/> is then applied. The stream stays open between calls (a move catches up several times
    /// and the last one, while its buckets are frozen, must be quick); it is opened again after a failure or
    /// cancellation, from the slot's confirmed position; replaying from there is harmless. Needs, on the source, the
    /// REPLICATION attribute, EXECUTE on <c>pg_logical_emit_message</c> (for the marker; every role has it) and SELECT
    /// on the tables (an unchanged TOAST value the target cannot supply is read there); on the target, INSERT, UPDATE,
    /// DELETE and SELECT.
    /// </summary>
    /// <param name="targetConnectionString">The target shard.</param>
    /// <param name="buckets">The moving buckets.</param>
    /// <param name="bucketCount">The number of buckets the hash space is cut into.</param>
    /// <param name="ct">Stops streaming (and closes the stream); the target keeps every group of source transactions applied so far, whole.</param>
    /// <param name="until">A source position, e.g. <c>pg_current_wal_lsn()</c> read when writes to the buckets stopped.</param>
    public async Task<CatchUp> CatchUpAsync(string targetConnectionString, IReadOnlyCollection<int> buckets, int bucketCount,
        NpgsqlLogSequenceNumber until, CancellationToken ct)
    {
        var nonce = NewMarker();
        return await ApplyToMarkerAsync(targetConnectionString, buckets, bucketCount, nonce, async () =>
        {
            var marker = await EmitMarkerAsync(nonce, ct).ConfigureAwait(false);
            if (marker < until)
            {
                throw new ArgumentOutOfRangeException(nameof(until), $"Position {until} is ahead of the source's WAL ({marker}); pass a position the source has written.");
            }
        }, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Like <see cref="CatchUpAsync"/>, but the caller writes the marker (<see cref="MarkerSql"/> of <paramref name="nonce"/>)
    /// into the source's WAL itself, on its own connection and when it chooses (e.g. in the same round trip that freezes
    /// the buckets). Meanwhile the stream applies whatever comes, so the marker finds little left to apply.
    /// </summary>
    public Task<CatchUp> CatchUpToMarkerAsync(string targetConnectionString, IReadOnlyCollection<int> buckets, int bucketCount, string nonce,
        CancellationToken ct) =>
        ApplyToMarkerAsync(targetConnectionString, buckets, bucketCount, nonce, static () => Task.CompletedTask, ct);

    /// <summary>A new marker nonce for <see cref="MarkerSql"/> and <see cref="CatchUpToMarkerAsync"/>.</summary>
    public static string NewMarker() => Guid.NewGuid().ToString("N");

    /// <summary>The statement that writes the catch-up marker <paramref name="nonce"/> (hex, from <see cref="NewMarker"/>) into the WAL.</summary>
    public static string MarkerSql(string nonce) =>
        MarkerNonce().IsMatch(nonce)
            ? $"select pg_logical_emit_message(false, '{MarkerPrefix}', '{nonce}')"
            : throw new ArgumentException("A marker nonce is 32 hex digits (NewMarker).", nameof(nonce));

    /// <summary>
    /// A statement that makes the source's WAL up to here visible to the stream at once: a marker is not a commit, and a
    /// walsender sends only WAL the server has flushed, which with <c>synchronous_commit = off</c> writers (or none at all)
    /// can take up to three <c>wal_writer_delay</c>s. A transaction with an id, committed synchronously, flushes it.
    /// Run it after the marker, in its own transaction.
    /// </summary>
    public const string FlushWalSql = "select set_config('synchronous_commit', 'on', true), txid_current()";

    /// <summary>
    /// Records, from now on, the primary keys of every row change the stream brings (also across a reopened stream), until
    /// <see cref="StopRecording"/>. Call it between catch-ups: the keys are those after the last marker reached.
    /// </summary>
    public ChangedKeys StartRecording()
    {
        var keys = new ChangedKeys();
        _recording = keys;
        _stream?.Record(keys);
        return keys;
    }

    /// <summary>Stops recording keys (see <see cref="StartRecording"/>).</summary>
    public void StopRecording()
    {
        _recording = null;
        _stream?.Record(null);
    }

    /// <summary>Stops a catch-up that waits for a marker that will not come (its caller failed before writing it).</summary>
    public void StopCatchUp() => _stream?.Stop();

    private async Task<CatchUp> ApplyToMarkerAsync(string targetConnectionString, IReadOnlyCollection<int> buckets, int bucketCount, string nonce,
        Func<Task> emit, CancellationToken ct)
    {
        ValidateBuckets(buckets, bucketCount);
        var stream = _stream is { } open && open.Matches(targetConnectionString, buckets, bucketCount)
            ? open
            : await OpenStreamAsync(targetConnectionString, buckets, bucketCount, ct).ConfigureAwait(false);
        try
        {
            await emit().ConfigureAwait(false);
            using var stop = ct.Register(static s => ((ChangeStream)s!).Stop(), stream);
            return await stream.ApplyUntilAsync(nonce, ct).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            await CloseStreamAsync().ConfigureAwait(false);
            if (ct.IsCancellationRequested && e is not OperationCanceledException)
            {
                // Stopping the stream breaks its read: the caller asked for the stop.
                throw new OperationCanceledException("Catch-up was cancelled.", e, ct);
            }

            throw;
        }
    }

    private async Task<ChangeStream> OpenStreamAsync(string targetConnectionString, IReadOnlyCollection<int> buckets, int bucketCount, CancellationToken ct)
    {
        await CloseStreamAsync().ConfigureAwait(false);

        // A slot streams to one connection at a time; the exporter, if still open, lets go of its snapshot first and
        // streams it itself.
        await ReleaseSnapshotAsync(keep: true, ct).ConfigureAwait(false);
        await WaitSlotFreeAsync(ct).ConfigureAwait(false);
        return _stream = await StartStreamAsync(targetConnectionString, buckets, bucketCount, await TakeSpareAsync(ct).ConfigureAwait(false), ct)
            .ConfigureAwait(false);
    }

    // The exporter's connection, if it is still there and answers: it was idle through the whole copy and may be gone (the
    // source restarted, a proxy dropped it), and streaming starts lazily, where a dead connection would fail the catch-up.
    private async Task<LogicalReplicationConnection?> TakeSpareAsync(CancellationToken ct)
    {
        if (Interlocked.Exchange(ref _spare, null) is not { } spare)
        {
            return null;
        }

        try
        {
            await spare.IdentifySystem(ct).ConfigureAwait(false);
            return spare;
        }
        catch (Exception e) when (!ct.IsCancellationRequested && (e is InvalidOperationException || ShardErrors.FromShard(e)))
        {
            await spare.DisposeAsync().ConfigureAwait(false);
            return null;
        }
        catch
        {
            await spare.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task<ChangeStream> StartStreamAsync(string targetConnectionString, IReadOnlyCollection<int> buckets, int bucketCount,
        LogicalReplicationConnection? opened, CancellationToken ct)
    {
        NpgsqlConnection target;
        try
        {
            target = await OpenTargetAsync(targetConnectionString, _session, ct).ConfigureAwait(false);
        }
        catch
        {
            // No stream took the exporter's connection: it would hold a WAL sender on the source.
            if (opened is not null)
            {
                await opened.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }

        var stream = new ChangeStream(targetConnectionString, buckets, bucketCount, target,
            new ChangeApplier(_source, target, _tables, buckets, bucketCount) { Recording = _recording },
            opened ?? new LogicalReplicationConnection(MoverConnectionString(_source)), isOpen: opened is not null);
        try
        {
            await stream.StartAsync(SlotName, Options(SlotName), ct).ConfigureAwait(false);
            return stream;
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task CloseStreamAsync()
    {
        if (_stream is { } stream)
        {
            _stream = null;
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>One open replication stream of the slot with its target connection and applier.</summary>
    private sealed class ChangeStream(string target, IReadOnlyCollection<int> buckets, int bucketCount, NpgsqlConnection targetConnection,
        ChangeApplier applier, LogicalReplicationConnection replication, bool isOpen) : IAsyncDisposable
    {
        private readonly CancellationTokenSource _streaming = new();
        private readonly int[] _buckets = [.. buckets.Order()];
        private IAsyncEnumerator<PgOutputReplicationMessage>? _messages;
        private NpgsqlLogSequenceNumber _last;
        private int _pending;

        public bool Matches(string targetConnectionString, IReadOnlyCollection<int> moving, int count) =>
            target == targetConnectionString && count == bucketCount && moving.Order().SequenceEqual(_buckets);

        public async Task StartAsync(string slot, PgOutputReplicationOptions options, CancellationToken ct)
        {
            if (!isOpen)
            {
                await replication.Open(ct).ConfigureAwait(false);
            }

            _messages = replication.StartReplication(new PgOutputReplicationSlot(slot), options, _streaming.Token).GetAsyncEnumerator(_streaming.Token);
        }

        public void Stop() => _streaming.Cancel();

        public void Record(ChangedKeys? keys) => applier.Recording = keys;

        public async Task<CatchUp> ApplyUntilAsync(string nonce, CancellationToken ct)
        {
            var before = applier.Changes;
            while (await _messages!.MoveNextAsync().ConfigureAwait(false))
            {
                switch (_messages.Current)
                {
                    case RelationMessage relation:
                        applier.Relation(relation);
                        break;
                    case CommitMessage commit:
                        // Source transactions are applied in groups (one target commit for many): applying is idempotent, and
                        // the slot is told a position only once the target has committed everything before it.
                        _last = commit.TransactionEndLsn;
                        if (++_pending >= CommitGroup)
                        {
                            await applier.CommitAsync(ct).ConfigureAwait(false);
                            replication.SetReplicationStatus(_last);
                            _pending = 0;
                        }

                        break;
                    case LogicalDecodingMessage logical when logical.Prefix == MarkerPrefix:
                        if (await ReadAsync(logical, ct).ConfigureAwait(false) != nonce)
                        {
                            break; // a marker of an earlier catch-up of this or another move
                        }

                        await applier.CommitAsync(ct).ConfigureAwait(false);
                        _pending = 0;
                        _last = logical.MessageLsn > _last ? logical.MessageLsn : _last;
                        replication.SetReplicationStatus(_last);
                        await replication.SendStatusUpdate(ct).ConfigureAwait(false);
                        return new CatchUp(applier.Changes - before, _last);
                    case var message:
                        await applier.ApplyAsync(message, ct).ConfigureAwait(false);
                        break;
                }
            }

            ct.ThrowIfCancellationRequested();
            throw new BucketMoveException("The source ended the replication stream before catch-up reached its marker; run catch-up again.");
        }

        public async ValueTask DisposeAsync()
        {
            await _streaming.CancelAsync().ConfigureAwait(false);
            if (_messages is not null)
            {
                try
                {
                    await _messages.DisposeAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is OperationCanceledException or NpgsqlException or IOException)
                {
                    // The stream we stopped.
                }
            }

            await replication.DisposeAsync().ConfigureAwait(false);
            await applier.DisposeAsync().ConfigureAwait(false);
            await targetConnection.DisposeAsync().ConfigureAwait(false);
            _streaming.Dispose();
        }
    }

    private async Task<NpgsqlLogSequenceNumber> EmitMarkerAsync(string nonce, CancellationToken ct)
    {
        var connection = await OpenAsync(_source, ct).ConfigureAwait(false);
        await using var connectionLifetime = connection.ConfigureAwait(false);
        // One implicit transaction: the marker, then a synchronous commit that flushes it.
        var command = new NpgsqlCommand($"{MarkerSql(nonce)}; {FlushWalSql}", connection);
        await using var commandLifetime = command.ConfigureAwait(false);
        return (NpgsqlLogSequenceNumber)(await command.ExecuteScalarAsync(ct).ConfigureAwait(false))!;
    }

    private static async Task<string> ReadAsync(LogicalDecodingMessage message, CancellationToken ct)
    {
        using var reader = new StreamReader(message.Data, Encoding.UTF8);
        return await reader.ReadToEndAsync(ct).ConfigureAwait(false);
    }

    [GeneratedRegex("^[0-9a-f]{32}$")]
    private static partial Regex MarkerNonce();

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
}

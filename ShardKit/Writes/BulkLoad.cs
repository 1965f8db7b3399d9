using System.Collections.Concurrent;
using System.Threading.Channels;
using Npgsql;

namespace ShardKit;

/// <summary>Names shared by every bulk load.</summary>
internal static class BulkLoad
{
    /// <summary>The operation name in telemetry and logs.</summary>
    public const string Operation = ShardKitTelemetry.BulkInsertOperation;
}

/// <summary>
/// One bulk load: a producer reads the input and routes rows into one bounded channel per shard; one consumer per
/// shard streams its channel into a binary COPY inside a transaction. The first failure cancels every side and rolls
/// every shard back; when all COPYs completed, <see cref="CommitAfterAllCopies"/> commits them (an all-or-nothing load runs inside a distributed transaction instead).
/// </summary>
internal sealed partial class BulkLoad<T> : IDisposable
{
    private readonly ShardSession _session;
    private readonly string _table;
    private readonly BulkInsertOptions _options;
    private readonly CancellationToken _callerToken;
    private readonly CancellationTokenSource _cancel;
    private readonly ConcurrentDictionary<int, ShardFailure> _shardFailures = new();
    private BulkRowError? _inputError;

    private BulkLoad(ShardSession session, string table, BulkInsertOptions options, CancellationToken cancellationToken)
    {
        _session = session;
        _table = table;
        _options = options;
        _callerToken = cancellationToken;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
    }

    private string[] Names => [.. _session.Shards.Map.ShardNames];

    public static async Task<BulkInsertResult> RunAsync(ShardSession session, string table, BulkInsertOptions? options,
        Func<BulkRouter<T>, CancellationToken, Task> produce, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(table);
        options ??= BulkInsertOptions.Default;
        options.Validate();
        ShardKeyAccessor<T>.EnsureKey();
        if (session.Pinned is { } pinned)
        {
            throw new ShardRoutingException(
                $"A bulk load writes to every shard and cannot run inside the single-shard transaction on '{session.Shards.NameOf(pinned.Shard)}'; commit it first.");
        }

        using var load = new BulkLoad<T>(session, table, options, cancellationToken);
        return await load.RunAsync(produce).ConfigureAwait(false);
    }

    private async Task<BulkInsertResult> RunAsync(Func<BulkRouter<T>, CancellationToken, Task> produce)
    {
        var names = Names;
        using var activity = ShardKitTelemetry.StartBulkInsert(_table, names.Length);
        try
        {
            var plan = await PlanAsync().ConfigureAwait(false);
            var channels = names.Select(_ => Channel.CreateBounded<RowBatch<T>>(new BoundedChannelOptions(_options.ChannelCapacity)
            {
                SingleReader = true,
                SingleWriter = true,
                FullMode = BoundedChannelFullMode.Wait,
            })).ToArray();
            var map = _session.Shards.Map;
            var router = new BulkRouter<T>(map.Strategy, channels, _options.BatchSize);
            var copies = names.Select((_, shard) => new ShardCopy<T>(_session, shard, plan, _options.RowsPerCopy, () => router.BucketsRoutedTo(shard)))
                .ToArray();
            var token = _cancel.Token;
            var running = copies.Select((copy, shard) => GuardAsync(shard, copy.RunAsync(channels[shard].Reader, token)))
                .Append(GuardAsync(-1, Task.Run(() => ProduceAsync(produce, router, token), CancellationToken.None)))
                .ToArray();
            await Task.WhenAll(running).ConfigureAwait(false);

            if (_inputError is not null || !_shardFailures.IsEmpty || _callerToken.IsCancellationRequested)
            {
                await RollBackAsync(copies).ConfigureAwait(false);
                _callerToken.ThrowIfCancellationRequested();
                throw FailedBeforeCommit(names, copies);
            }

            var result = await CommitAsync(copies).ConfigureAwait(false);
            activity?.SetTag(ShardKitTelemetry.RowsTag, result.Total);
            ShardKitLog.BulkInsertCompleted(_session.Shards.Logger, _table, result.Total, names.Length);
            return result;
        }
        catch (Exception e)
        {
            ShardKitTelemetry.RecordError(activity, e);
            throw;
        }
    }

    // The table is read on the first shard: a missing column or table fails here, before any row is read.
    private async Task<BulkPlan<T>> PlanAsync()
    {
        IReadOnlyList<TableColumn> columns;
        try
        {
            var first = await _session.OpenAsync(0, _callerToken).ConfigureAwait(false);
            columns = await TableCatalog.ReadAsync(first, _table, _callerToken).ConfigureAwait(false);
        }
        catch (NpgsqlException e)
        {
            var reason = e is PostgresException pg
                ? $"the table could not be read on shard '{Names[0]}' ({pg.MessageText}); create it on every shard first."
                : $"shard '{Names[0]}' could not be reached to read the table's columns ({e.Message}).";
            throw new BulkInsertException($"Bulk insert into {_table}: {reason} No row was written.",
                e, new BulkFault(null, null, [new ShardFailure(Names[0], e)]), [], Names, []);
        }

        try
        {
            return BulkPlan<T>.Create(_table, columns, _options.Columns);
        }
        catch (BulkRowError e)
        {
            throw new BulkInsertException(e.Message + " No row was written.", e.InnerException, new BulkFault(null, e.Property, []), [], Names, []);
        }
    }

    private static async Task ProduceAsync(Func<BulkRouter<T>, CancellationToken, Task> produce, BulkRouter<T> router, CancellationToken token)
    {
        try
        {
            await produce(router, token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not BulkRowError and not OperationCanceledException)
        {
            // The input's own enumerator failed; the row it was reading is the one at fault.
            throw new BulkRowError($"Reading row {router.RowsRead} of the input failed: {e.Message}", router.RowsRead, property: null, e);
        }
    }

    // Records the first real failure and stops every other side; failures caused by that stop are not recorded.
    private async Task GuardAsync(int shard, Task work)
    {
        try
        {
            await work.ConfigureAwait(false);
        }
#pragma warning disable CA1031 // every failure is recorded and reported together once all sides stopped
        catch (Exception e)
#pragma warning restore CA1031
        {
            if (_cancel.IsCancellationRequested)
            {
                return;
            }

            if (e is BulkRowError input)
            {
                Interlocked.CompareExchange(ref _inputError, input, null);
            }
            else if (shard >= 0)
            {
                _shardFailures.TryAdd(shard, new ShardFailure(Names[shard], e)); // recorded by the shard's pipeline call
            }

            await _cancel.CancelAsync().ConfigureAwait(false);
        }
    }

    public void Dispose() => _cancel.Dispose();
}

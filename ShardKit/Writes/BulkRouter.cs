using System.Threading.Channels;

namespace ShardKit;

/// <summary>
/// The producer's side: places each row by its key (the compiled accessor; no reflection, no boxing), fills one batch
/// per shard and hands full batches to that shard's bounded channel, waiting while the channel is full.
/// </summary>
internal sealed class BulkRouter<T>
{
    private readonly IShardingStrategy _strategy;
    private readonly HashShardingStrategy? _hash;
    private readonly bool[]? _bucketsRouted; // under hash sharding: the buckets of the rows placed so far
    private readonly Channel<RowBatch<T>>[] _channels;
    private readonly RowBatch<T>?[] _filling;
    private readonly int _batchSize;
    private long _next;

    public BulkRouter(IShardingStrategy strategy, Channel<RowBatch<T>>[] channels, int batchSize)
    {
        _strategy = strategy;
        _hash = strategy as HashShardingStrategy;
        _bucketsRouted = _hash is null ? null : new bool[_hash.Buckets.Count];
        _channels = channels;
        _filling = new RowBatch<T>?[channels.Length];
        _batchSize = batchSize;
    }

    /// <summary>Rows read from the input so far.</summary>
    public long RowsRead => _next;

    /// <summary>
    /// The buckets of the rows placed on <paramref name="shard"/> so far (every row a shard's COPY has sent was placed
    /// before it reached the shard's channel); null without hash sharding.
    /// </summary>
    public IReadOnlyList<int>? BucketsRoutedTo(int shard)
    {
        if (_bucketsRouted is not { } routed)
        {
            return null;
        }

        var buckets = new List<int>();
        for (var bucket = 0; bucket < routed.Length; bucket++)
        {
            if (Volatile.Read(ref routed[bucket]) && _hash!.Buckets.ShardOfBucket(bucket) == shard)
            {
                buckets.Add(bucket);
            }
        }

        return buckets;
    }

    public ValueTask AddAsync(T row, CancellationToken cancellationToken)
    {
        var index = _next++;
        var shard = ShardOf(row, index);
        var batch = _filling[shard] ??= RowBatch<T>.Rent(_batchSize);
        batch.Add(row, index);
        if (!batch.IsFull)
        {
            return ValueTask.CompletedTask;
        }

        _filling[shard] = null;
        return _channels[shard].Writer.WriteAsync(batch, cancellationToken);
    }

    /// <summary>Sends every partly filled batch and tells each shard that no more rows come.</summary>
    public async Task CompleteAsync(CancellationToken cancellationToken)
    {
        for (var shard = 0; shard < _channels.Length; shard++)
        {
            if (_filling[shard] is { } batch)
            {
                _filling[shard] = null;
                await _channels[shard].Writer.WriteAsync(batch, cancellationToken).ConfigureAwait(false);
            }

            _channels[shard].Writer.TryComplete();
        }
    }

    private int ShardOf(T row, long index)
    {
        if (row is null)
        {
            throw new BulkRowError($"Row {index} of the input is null; a bulk load writes rows, so leave nulls out.", index, property: null);
        }

        var key = ShardKeyAccessor<T>.ReadOrNone(row);
        var member = ShardKeyAccessor<T>.Member!;
        if (key.Kind == ShardKeyKind.None)
        {
            throw new BulkRowError(
                $"Row {index}: {typeof(T).Name}.{member.Name} is the shard key and it is null; a row cannot be placed without its key.",
                index, member.Name);
        }

        try
        {
            if (_hash is null)
            {
                return _strategy.ShardOf(key);
            }

            var bucket = _hash.BucketOf(key);
            _bucketsRouted![bucket] = true;
            return _hash.Buckets.ShardOfBucket(bucket);
        }
        catch (ShardRoutingException e)
        {
            throw new BulkRowError($"Row {index}: {typeof(T).Name}.{member.Name} cannot be placed: {e.Message}", index, member.Name, e);
        }
    }
}

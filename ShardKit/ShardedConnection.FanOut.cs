namespace ShardKit;

public sealed partial class ShardedConnection
{
    /// <summary>
    /// Targets every shard on purpose: commands run on all of them in parallel and multi-row reads are merged as the
    /// given merge plan says.
    /// </summary>
    public FanOutScope AllShards(FanOutOptions? options = null) =>
        new(this, Enumerable.Range(0, DataSource.ShardCount).ToArray(), options ?? FanOutOptions.Default);

    /// <summary>Targets the named shards, in parallel, like <see cref="AllShards"/>.</summary>
    public FanOutScope Shards(params IEnumerable<string> shardNames)
    {
        ArgumentNullException.ThrowIfNull(shardNames);
        var indexes = shardNames.Select(DataSource.Map.IndexOf).Distinct().Order().ToArray();
        return indexes.Length > 0
            ? new FanOutScope(this, indexes, FanOutOptions.Default)
            : throw new ArgumentException("Name at least one shard.", nameof(shardNames));
    }
}

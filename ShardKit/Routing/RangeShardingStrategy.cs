namespace ShardKit;

/// <summary>Half-open ranges, validated to tile the key space they cover; a key is found by binary search.</summary>
internal sealed class RangeShardingStrategy : IShardingStrategy
{
    private readonly ShardRange[] _ranges;
    private readonly int[] _owners;

    public RangeShardingStrategy(ShardRange[] sortedRanges, int[] owners)
    {
        _ranges = sortedRanges;
        _owners = owners;
    }

    public string Name => "range";

    public int ShardOf(in ShardKeyValue key)
    {
        int lo = 0, hi = _ranges.Length - 1;
        var kind = (_ranges[0].From ?? _ranges[0].To)!.Value.Kind;
        if (key.Kind != kind)
        {
            throw new ShardRoutingException($"The range map holds {kind} keys; a {key.Kind} key cannot be placed in it.");
        }

        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            var range = _ranges[mid];
            if (range.From is { } from && key < from)
            {
                hi = mid - 1;
            }
            else if (range.To is { } to && key >= to)
            {
                lo = mid + 1;
            }
            else
            {
                return _owners[mid];
            }
        }

        throw new ShardRoutingException(
            $"The key {key} is outside every configured range ({_ranges[0].From?.ToString() ?? "-inf"} to " +
            $"{_ranges[^1].To?.ToString() ?? "+inf"}); add a range that covers it or leave the outer bounds open (null).");
    }
}

namespace ShardKit;

/// <summary>Checks that ranges tile the keys: one key type, From &lt; To, no gap and no overlap between neighbours.</summary>
internal static class RangeMapValidator
{
    public static RangeShardingStrategy? Create(IReadOnlyList<ShardRange> ranges, Dictionary<string, int> index, List<string> errors)
    {
        if (ranges.Count == 0)
        {
            errors.Add("Range sharding has no ranges; add at least one range [From, To) per shard.");
            return null;
        }

        var before = errors.Count;
        var kinds = ranges.SelectMany(r => new[] { r.From, r.To }).Where(k => k.HasValue).Select(k => k!.Value.Kind).Distinct().ToArray();
        if (kinds.Length != 1)
        {
            errors.Add(kinds.Length == 0
                ? "Every range is unbounded on both sides; give the ranges bounds."
                : $"The ranges mix key types ({string.Join(", ", kinds)}); use one key type per map.");
            return null;
        }

        foreach (var r in ranges)
        {
            if (!index.ContainsKey(r.Shard ?? ""))
            {
                errors.Add($"Range [{Show(r.From)}, {Show(r.To)}) names shard '{r.Shard}', which is not configured.");
            }

            if (r.From is { } f && r.To is { } t && f >= t)
            {
                errors.Add($"Range [{f}, {t}) is empty or reversed; From must be below To.");
            }
        }

        // Unbounded-below first, then by lower bound.
        var sorted = ranges.OrderBy(r => r.From.HasValue).ThenBy(r => r.From ?? default).ToArray();
        for (var i = 1; i < sorted.Length; i++)
        {
            var previous = sorted[i - 1];
            var current = sorted[i];
            if (previous.To is not { } end || current.From is not { } start)
            {
                errors.Add($"Ranges [{Show(previous.From)}, {Show(previous.To)}) and [{Show(current.From)}, {Show(current.To)}) overlap; " +
                           "only the first range may be open below and only the last open above.");
            }
            else if (start > end)
            {
                errors.Add($"There is a gap between {end} and {start}: keys in [{end}, {start}) have no shard. Extend a range to cover it.");
            }
            else if (start < end)
            {
                errors.Add($"Ranges [{Show(previous.From)}, {end}) and [{start}, {Show(current.To)}) overlap on [{start}, {end}); each key must have one shard.");
            }
        }

        return errors.Count == before
            ? new RangeShardingStrategy(sorted, sorted.Select(r => index[r.Shard]).ToArray())
            : null;
    }

    private static string Show(ShardKeyValue? key) => key?.ToString() ?? "unbounded";
}

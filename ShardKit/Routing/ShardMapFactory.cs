using System.Globalization;
using Npgsql;

namespace ShardKit;

/// <summary>
/// Validates a shard configuration and freezes it into a <see cref="ShardMap"/>. Collects every error before failing,
/// so one exception lists all of them. The builder and the options validator both come through here.
/// </summary>
internal static class ShardMapFactory
{
    public static ShardMap Create(ShardKitOptions options, Func<ShardKeyValue, string>? custom = null,
        IReadOnlyList<ShardRange>? ranges = null, IReadOnlyDictionary<ShardKeyValue, string>? list = null)
    {
        var errors = options.ConfigurationErrors is { Count: > 0 } configuration ? [.. configuration] : new List<string>();
        var map = errors.Count == 0 ? TryCreate(options, custom, ranges, list, errors) : null;
        return errors.Count == 0 ? map! : throw new ShardConfigurationException(errors);
    }

    public static List<string> Validate(ShardKitOptions options)
    {
        if (options.ConfigurationErrors is { Count: > 0 } configuration)
        {
            return [.. configuration];
        }

        var errors = new List<string>();
        // A custom delegate cannot come from configuration; its presence is checked by the builder.
        TryCreate(options, options.Strategy == ShardingStrategyKind.Custom ? _ => "" : null, null, null, errors);
        if (options.DistributedTransactions is { } distributed)
        {
            errors.AddRange(distributed.Validate(options.Shards.Select(s => s.Name).ToArray()));
        }

        return errors;
    }

    private static ShardMap? TryCreate(ShardKitOptions options, Func<ShardKeyValue, string>? custom,
        IReadOnlyList<ShardRange>? ranges, IReadOnlyDictionary<ShardKeyValue, string>? list, List<string> errors)
    {
        var shards = ValidateShards(options.Shards, errors);
        errors.AddRange(options.Replicas.Validate());
        var index = shards.GroupBy(s => s.Name, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.First().Index, StringComparer.Ordinal);
        IShardingStrategy? strategy = null;
        switch (options.Strategy)
        {
            case ShardingStrategyKind.Hash:
                if (options.Buckets < 1 || options.Buckets > BucketMap.MaxBuckets)
                {
                    errors.Add($"Buckets is {options.Buckets}; use 1 to {BucketMap.MaxBuckets} (1024 is a good default).");
                }
                else if (shards.Count > 0 && options.Buckets < shards.Count)
                {
                    errors.Add($"Buckets ({options.Buckets}) is fewer than the shards ({shards.Count}); some shards would hold nothing.");
                }
                else if (shards.Count > 0)
                {
                    strategy = new HashShardingStrategy(BucketMap.Even(options.Buckets, shards.Count));
                }

                break;
            case ShardingStrategyKind.Modulo:
                strategy = shards.Count > 0 ? new ModuloShardingStrategy(shards.Count) : null;
                break;
            case ShardingStrategyKind.Range:
                strategy = RangeMapValidator.Create(ranges ?? ParseRanges(options, errors), index, errors);
                break;
            case ShardingStrategyKind.List:
                strategy = CreateList(list ?? ParseList(options, errors), options.DefaultShard, index, errors);
                break;
            case ShardingStrategyKind.Custom:
                if (custom is null)
                {
                    errors.Add("Strategy is Custom but no chooser was given; call UseCustomSharding(key => shardName) on the builder.");
                }
                else
                {
                    strategy = new CustomShardingStrategy(custom, index);
                }

                break;
            default:
                errors.Add($"Strategy '{options.Strategy}' is unknown; use Hash, Modulo, Range, List or Custom.");
                break;
        }

        if (options.StoredMap is { } stored)
        {
            errors.AddRange(stored.Validate(shards.Select(s => s.Name).ToArray(), options.Strategy));
        }

        return errors.Count == 0 && strategy is not null ? new ShardMap(shards, strategy) : null;
    }

    private static List<ShardInfo> ValidateShards(IList<ShardOptions> configured, List<string> errors)
    {
        var shards = new List<ShardInfo>();
        if (configured.Count == 0)
        {
            errors.Add("No shards are configured; add at least one with AddShard(name, connectionString) or a ShardKit:Shards section.");
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < configured.Count; i++)
        {
            var shard = configured[i];
            var label = string.IsNullOrWhiteSpace(shard?.Name) ? $"Shard #{i}" : $"Shard '{shard.Name}'";
            if (shard is null || string.IsNullOrWhiteSpace(shard.Name))
            {
                errors.Add($"{label} has no name; give every shard a unique name.");
                continue;
            }

            if (!seen.Add(shard.Name))
            {
                errors.Add($"Shard name '{shard.Name}' appears more than once; shard names must be unique.");
                continue;
            }

            // A shard with a bad connection string is still a configured name, so range and list entries that name it
            // add no second, misleading error; the map is never built while any error stands.
            if (ConnectionStrings.Check(shard.ConnectionString) is { } problem)
            {
                errors.Add($"{label} has {problem}.");
            }

            shards.Add(new ShardInfo(shards.Count, shard.Name, shard.ConnectionString) { Standbys = ValidateStandbys(shard, label, errors) });
        }

        return shards;
    }

    private static StandbyInfo[] ValidateStandbys(ShardOptions shard, string label, List<string> errors)
    {
        var standbys = new StandbyInfo[shard.Standbys.Count];
        for (var i = 0; i < standbys.Length; i++)
        {
            var name = StandbyInfo.NameFor(shard.Name, i);
            if (ConnectionStrings.Check(shard.Standbys[i]) is { } problem)
            {
                errors.Add($"{label}: standby #{i + 1} ('{name}') has {problem}; list each standby's connection string under Standbys.");
            }
            else if (string.Equals(shard.Standbys[i], shard.ConnectionString, StringComparison.Ordinal))
            {
                errors.Add($"{label}: standby #{i + 1} ('{name}') has the primary's own connection string; list the standby servers, not the primary.");
            }

            standbys[i] = new StandbyInfo(i, name, shard.Standbys[i] ?? "");
        }

        return standbys;
    }

    private static ListShardingStrategy? CreateList(IReadOnlyDictionary<ShardKeyValue, string> list, string? defaultShard,
        Dictionary<string, int> index, List<string> errors)
    {
        var directory = new Dictionary<ShardKeyValue, int>();
        foreach (var (key, shard) in list)
        {
            if (index.TryGetValue(shard, out var i))
            {
                directory[key] = i;
            }
            else
            {
                errors.Add($"List entry {key} names shard '{shard}', which is not configured.");
            }
        }

        if (list.Select(e => e.Key.Kind).Distinct().Count() > 1)
        {
            errors.Add("The shard list mixes key types; use one key type per map.");
        }

        int? fallback = null;
        if (defaultShard is not null)
        {
            if (index.TryGetValue(defaultShard, out var d))
            {
                fallback = d;
            }
            else
            {
                errors.Add($"DefaultShard '{defaultShard}' is not a configured shard.");
            }
        }

        if (list.Count == 0 && fallback is null)
        {
            errors.Add("List sharding has no entries and no default shard; add entries or a default shard.");
        }

        return new ListShardingStrategy(directory, fallback);
    }

    private static List<ShardRange> ParseRanges(ShardKitOptions options, List<string> errors)
    {
        var ranges = new List<ShardRange>();
        foreach (var r in options.Ranges)
        {
            ranges.Add(new ShardRange(ParseKey(r.From, options.KeyType, errors), ParseKey(r.To, options.KeyType, errors), r.Shard));
        }

        return ranges;
    }

    private static Dictionary<ShardKeyValue, string> ParseList(ShardKitOptions options, List<string> errors)
    {
        var list = new Dictionary<ShardKeyValue, string>();
        foreach (var (text, shard) in options.List)
        {
            if (ParseKey(text, options.KeyType, errors) is { } key)
            {
                list[key] = shard;
            }
        }

        return list;
    }

    private static ShardKeyValue? ParseKey(string? text, ShardKeyKind kind, List<string> errors)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        var ok = kind switch
        {
            ShardKeyKind.Integer => long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) ? ShardKeyValue.FromInt64(l) : (ShardKeyValue?)null,
            ShardKeyKind.String => ShardKeyValue.FromString(text),
            ShardKeyKind.Guid => Guid.TryParse(text, out var g) ? ShardKeyValue.FromGuid(g) : (ShardKeyValue?)null,
            ShardKeyKind.DateTime => DateTime.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var d) ? ShardKeyValue.FromDateTime(d) : (ShardKeyValue?)null,
            ShardKeyKind.DateTimeOffset => DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var o) ? ShardKeyValue.FromDateTimeOffset(o) : (ShardKeyValue?)null,
            _ => null,
        };
        if (ok is null)
        {
            errors.Add($"'{text}' is not a valid {kind} key (KeyType is {kind}).");
        }

        return ok;
    }
}

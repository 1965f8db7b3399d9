using System.Collections;
using Dapper;

namespace ShardKit;

/// <summary>
/// Finds the target of a routed command from its parameters (and result type), using the cached
/// <see cref="ParameterPlan"/>: the parameters' own <c>[ShardKey]</c>, a batch of keyed items, the result type's key by
/// name, or else a key name the data source knows (<see cref="ShardKeyNames"/>). A command with no key is an error that
/// names the explicit alternatives; nothing is ever sent to a guessed shard or to every shard.
/// </summary>
internal static class RouteResolver
{
    public static Route Resolve(ShardMap map, ShardKeyNames known, object? parameters, Type? resultType) =>
        TryResolve(map, known, parameters, resultType, out var route) ? route : throw NoKey(resultType, parameters);

    /// <summary>
    /// Resolves like <see cref="Resolve"/>, but returns false instead of throwing when the parameters name no shard key
    /// at all. A key that is named but null, of the wrong type, or contradicted by another key still throws.
    /// </summary>
    public static bool TryResolve(ShardMap map, ShardKeyNames known, object? parameters, Type? resultType, out Route route)
    {
        route = default;
        if (parameters is null)
        {
            return false;
        }

        var plan = ParameterPlan.For(parameters.GetType(), resultType);
        known.Remember(plan.Key);
        return TryPlan(map, parameters, plan, plan.Expected, out route) || TryKnownNames(map, known, parameters, out route);
    }

    /// <summary>
    /// The hash buckets of the keys that placed a single-shard route (a write's fence names them): its one key, or the
    /// keys of a list that fell on one shard; empty when the map is not hash or the route came from no key.
    /// </summary>
    public static int[] BucketsOf(ShardMap map, in Route route) =>
        route.Bucket is { } bucket ? [bucket]
        : route.Keys is { } keys ? BucketsOf(map, keys)
        : route.Key.Kind != ShardKeyKind.None && map.Strategy is HashShardingStrategy hash ? [hash.BucketOf(route.Key)]
        : [];

    /// <summary>The hash buckets of a list's keys (<see cref="RoutePart.Keys"/>, <see cref="Route.Keys"/>).</summary>
    public static int[] BucketsOf(ShardMap map, IEnumerable keys) => map.Strategy is HashShardingStrategy hash
        ? keys.Cast<object>().Select(k => hash.BucketOf(ShardKeyValue.FromObject(k))).Distinct().ToArray()
        : [];

    /// <summary>The hash buckets of a batch part's items, read by the items' shard key member.</summary>
    public static int[] BucketsOf(ShardMap map, object parameters, BatchGroup group) =>
        map.Strategy is HashShardingStrategy hash && ParameterPlan.For(parameters.GetType(), null).ItemKey is { } key
            ? group.Items.Select(item => hash.BucketOf(key.Read(item))).Distinct().ToArray()
            : [];

    private static bool TryPlan(ShardMap map, object parameters, ParameterPlan plan, ExpectedKey? expected, out Route route)
    {
        switch (plan.Kind)
        {
            case ParameterPlanKind.Scalar:
                var key = Checked(plan.ReadScalar!(parameters), plan.MemberName!, plan.MemberType!, expected);
                route = Route.To(map.Strategy.ShardOf(key), key);
                return true;
            case ParameterPlanKind.Boxed:
                route = FromBoxed(map, parameters, plan, expected, plan.ReadBoxed!(parameters));
                return true;
            case ParameterPlanKind.Collection:
                route = Split(map, parameters, plan, expected, (IEnumerable?)plan.ReadBoxed!(parameters));
                return true;
            case ParameterPlanKind.Batch:
                route = Batch(map, (IEnumerable)parameters, plan.ItemKey!);
                return true;
            case ParameterPlanKind.ByName:
                return TryByName(map, parameters, plan.MemberName!, expected, out route);
            default:
                route = default;
                return false;
        }
    }

    // Several known key names in one parameter object must agree on the shard; otherwise which one places the
    // command is a guess, and it is refused.
    private static bool TryKnownNames(ShardMap map, ShardKeyNames known, object parameters, out Route route)
    {
        route = default;
        string? foundName = null;
        foreach (var expected in known.Keys)
        {
            var plan = ParameterPlan.ForName(parameters.GetType(), expected.Name);
            if (!TryPlan(map, parameters, plan, expected, out var candidate))
            {
                continue;
            }

            if (foundName is not null && !(route.IsSingle && candidate.IsSingle && route.Shard == candidate.Shard))
            {
                throw new ShardRoutingException(
                    $"The parameters carry two shard keys, {foundName} and {plan.MemberName}, that place the command on different " +
                    "shards. Choose the shard explicitly: ForKey(key) or OnShard(name) for one shard, AllShards() to fan out on purpose.");
            }

            route = candidate;
            foundName ??= plan.MemberName;
        }

        return foundName is not null;
    }

    private static ShardKeyValue Checked(ShardKeyValue key, string member, Type given, ExpectedKey? expected)
    {
        if (key.Kind == ShardKeyKind.None)
        {
            throw NullKey(member);
        }

        return expected is null ? key : expected.Check(key, member, given);
    }

    private static Route FromBoxed(ShardMap map, object parameters, ParameterPlan plan, ExpectedKey? expected, object? value)
    {
        if (value is IEnumerable keys and not string)
        {
            return Split(map, parameters, plan, expected, keys);
        }

        return value is null ? throw NullKey(plan.MemberName!) : To(map, Checked(ShardKeyValue.FromObject(value), plan.MemberName!, value.GetType(), expected));
    }

    private static Route To(ShardMap map, ShardKeyValue key) => Route.To(map.Strategy.ShardOf(key), key);

    private static bool TryByName(ShardMap map, object parameters, string name, ExpectedKey? expected, out Route route)
    {
        route = default;
        object? value;
        if (parameters is DynamicParameters dynamic)
        {
            var match = dynamic.ParameterNames.FirstOrDefault(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));
            if (match is null)
            {
                return false;
            }

            value = dynamic.Get<object?>(match);
        }
        else
        {
            var dictionary = (IDictionary<string, object?>)parameters;
            var match = dictionary.Keys.FirstOrDefault(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));
            if (match is null)
            {
                return false;
            }

            value = dictionary[match];
        }

        if (value is IEnumerable and not string)
        {
            throw new ShardRoutingException(
                $"A list of keys in '{name}' can be split per shard only when the parameters are an object (new {{ {name} = keys }}), " +
                "not DynamicParameters or a dictionary.");
        }

        route = value is null
            ? throw NullKey(name)
            : To(map, Checked(ShardKeyValue.FromObject(value), name, value.GetType(), expected));
        return true;
    }

    private static Route Split(ShardMap map, object parameters, ParameterPlan plan, ExpectedKey? expected, IEnumerable? keys)
    {
        if (keys is null)
        {
            throw NullKey(plan.MemberName!);
        }

        var groups = new Dictionary<int, List<object>>();
        foreach (var item in keys)
        {
            if (item is null)
            {
                throw NullKey(plan.MemberName! + "[…]");
            }

            var shard = map.Strategy.ShardOf(Checked(ShardKeyValue.FromObject(item), plan.MemberName!, item.GetType(), expected));
            if (!groups.TryGetValue(shard, out var list))
            {
                groups[shard] = list = [];
            }

            list.Add(item);
        }

        if (groups.Count == 1)
        {
            return Route.To(groups.Keys.First(), groups.Values.First());
        }

        var elementType = plan.ElementType ?? typeof(object);
        var parts = groups.OrderBy(g => g.Key)
            .Select(g => TypedArray(elementType, g.Value) is var keys
                ? new RoutePart(g.Key, ParameterCopier.WithMember(parameters, plan.MemberName!, keys), Keys: keys)
                : default)
            .ToArray();
        return Route.Split(parts);
    }

    /// <summary>
    /// Routes one part of a split key list again by <paramref name="map"/> (a shard refused it: its buckets moved): the
    /// part's keys alone, in the caller's own parameters, found by the same key member that split them the first time.
    /// </summary>
    public static Route SplitAgain(ShardMap map, ShardKeyNames known, object parameters, Array keys)
    {
        var plan = ParameterPlan.For(parameters.GetType(), null);
        if (plan.Kind is not (ParameterPlanKind.Collection or ParameterPlanKind.Boxed))
        {
            plan = known.Keys.Select(expected => ParameterPlan.ForName(parameters.GetType(), expected.Name))
                .First(p => p.Kind is ParameterPlanKind.Collection or ParameterPlanKind.Boxed && p.ReadBoxed!(parameters) is IEnumerable and not string);
        }

        return Split(map, parameters, plan, plan.Expected, keys);
    }

    /// <summary>
    /// Routes one shard's share of an item batch again by <paramref name="map"/> (the shard refused it: its buckets
    /// moved): its items alone, keeping their indexes in the caller's list.
    /// </summary>
    public static Route BatchAgain(ShardMap map, object parameters, BatchGroup group) =>
        Batch(map, group.Items, ParameterPlan.For(parameters.GetType(), null).ItemKey!, group.Indexes);

    /// <param name="map">The map to route by.</param>
    /// <param name="items">The items.</param>
    /// <param name="key">The items' shard key member.</param>
    /// <param name="indexes">Each item's index in the caller's list; null: its position in <paramref name="items"/>.</param>
    private static Route Batch(ShardMap map, IEnumerable items, ShardKeyMember key, IReadOnlyList<int>? indexes = null)
    {
        var groups = new Dictionary<int, BatchGroup>();
        var position = 0;
        foreach (var item in items)
        {
            var index = indexes?[position] ?? position;
            position++;
            if (item is null)
            {
                throw new ShardRoutingException($"A batch of {key.DeclaringType.Name} contains a null item (item {index}); remove it.");
            }

            var shard = map.Strategy.ShardOf(key.Read(item));
            if (!groups.TryGetValue(shard, out var group))
            {
                groups[shard] = group = new BatchGroup();
            }

            group.Add(item, index);
        }

        return Route.Split(groups.OrderBy(g => g.Key)
            .Select(g => new RoutePart(g.Key, TypedArray(key.DeclaringType, g.Value.Items), g.Value))
            .ToArray());
    }

    // Npgsql maps long[] to bigint[] and Guid[] to uuid[]; an object[] would not bind to "= any(@Key)".
    private static Array TypedArray(Type elementType, List<object> items)
    {
        var array = Array.CreateInstance(elementType, items.Count);
        for (var i = 0; i < items.Count; i++)
        {
            array.SetValue(items[i], i);
        }

        return array;
    }

    internal static ShardRoutingException NullKey(string member) => new(
        $"The shard key parameter {member} is null; a command cannot be routed without its key. Pass a value, or target " +
        "a shard explicitly with OnShard(name).");

    private static ShardRoutingException NoKey(Type? resultType, object? parameters)
    {
        var resultKey = resultType is null ? null : ShardKeyMember.For(resultType);
        var reason = parameters is null ? "the command has no parameters"
            : resultKey is not null ? $"{resultType!.Name}'s [ShardKey] is {resultKey.Name} but the parameters have no member of that name"
            : $"the parameters ({parameters.GetType().Name}) carry no known shard key and the result type declares none";
        return new ShardRoutingException(
            $"No shard key found: {reason}. Add [ShardKey] to the entity and pass the key in the parameters (register the " +
            "entity with AddEntity<T>() when the call has no typed result, as Execute has none), or choose the shards explicitly: " +
            "ForKey(key) or OnShard(name) for one shard, AllShards() to fan out on purpose.");
    }
}

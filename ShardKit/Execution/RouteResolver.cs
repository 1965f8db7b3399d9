using System.Collections;
using Dapper;

namespace ShardKit;

/// <summary>
/// Finds the target of a routed command from its parameters (and result type), using the cached
/// <see cref="ParameterPlan"/>. A command with no key is an error that names the explicit alternatives; nothing is
/// ever sent to a guessed shard or to every shard.
/// </summary>
internal static class RouteResolver
{
    public static Route Resolve(ShardMap map, object? parameters, Type? resultType)
    {
        if (parameters is null)
        {
            throw NoKey(resultType, null, "the command has no parameters");
        }

        var plan = ParameterPlan.For(parameters.GetType(), resultType);
        switch (plan.Kind)
        {
            case ParameterPlanKind.Scalar:
                var key = plan.ReadScalar!(parameters);
                return key.Kind != ShardKeyKind.None ? Route.To(map.Strategy.ShardOf(key)) : throw NullKey(plan.MemberName!);
            case ParameterPlanKind.Boxed:
                return FromBoxed(map, parameters, plan, plan.ReadBoxed!(parameters));
            case ParameterPlanKind.Collection:
                return Split(map, parameters, plan, (IEnumerable?)plan.ReadBoxed!(parameters));
            case ParameterPlanKind.Batch:
                return Batch(map, (IEnumerable)parameters, plan.ItemKey!);
            case ParameterPlanKind.ByName:
                return ByName(map, parameters, plan.MemberName!, resultType);
            default:
                throw NoKey(resultType, parameters.GetType(), plan.MemberName is null
                    ? null
                    : $"{resultType!.Name}'s [ShardKey] is {plan.MemberName} but the parameters have no member of that name");
        }
    }

    /// <summary>Like <see cref="Resolve"/>, but a command that carries no key goes to <paramref name="fallbackShard"/>.</summary>
    public static Route ResolveOrDefault(ShardMap map, object? parameters, Type? resultType, int fallbackShard) =>
        parameters is null || ParameterPlan.For(parameters.GetType(), resultType).Kind == ParameterPlanKind.None
            ? Route.To(fallbackShard)
            : Resolve(map, parameters, resultType);

    private static Route FromBoxed(ShardMap map, object parameters, ParameterPlan plan, object? value)
    {
        if (value is IEnumerable keys and not string)
        {
            return Split(map, parameters, plan, keys);
        }

        return value is null ? throw NullKey(plan.MemberName!) : Route.To(map.Strategy.ShardOf(ShardKeyValue.FromObject(value)));
    }

    private static Route ByName(ShardMap map, object parameters, string name, Type? resultType)
    {
        object? value;
        bool found;
        if (parameters is DynamicParameters dynamic)
        {
            var match = dynamic.ParameterNames.FirstOrDefault(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));
            found = match is not null;
            value = found ? dynamic.Get<object?>(match!) : null;
        }
        else
        {
            var dictionary = (IDictionary<string, object?>)parameters;
            var match = dictionary.Keys.FirstOrDefault(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));
            found = match is not null;
            value = found ? dictionary[match!] : null;
        }

        if (!found)
        {
            throw NoKey(resultType, parameters.GetType(), $"{resultType!.Name}'s [ShardKey] is {name} but the parameters have no '{name}'");
        }

        if (value is IEnumerable and not string)
        {
            throw new ShardRoutingException(
                $"A list of keys in '{name}' can be split per shard only when the parameters are an object (new {{ {name} = keys }}), " +
                "not DynamicParameters or a dictionary.");
        }

        return value is null ? throw NullKey(name) : Route.To(map.Strategy.ShardOf(ShardKeyValue.FromObject(value)));
    }

    private static Route Split(ShardMap map, object parameters, ParameterPlan plan, IEnumerable? keys)
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

            var shard = map.Strategy.ShardOf(ShardKeyValue.FromObject(item));
            if (!groups.TryGetValue(shard, out var list))
            {
                groups[shard] = list = [];
            }

            list.Add(item);
        }

        if (groups.Count == 1)
        {
            return Route.To(groups.Keys.First());
        }

        var elementType = plan.ElementType ?? typeof(object);
        var parts = groups.OrderBy(g => g.Key)
            .Select(g => new RoutePart(g.Key, ParameterCopier.WithMember(parameters, plan.MemberName!, TypedArray(elementType, g.Value))))
            .ToArray();
        return Route.Split(parts);
    }

    private static Route Batch(ShardMap map, IEnumerable items, ShardKeyMember key)
    {
        var groups = new Dictionary<int, List<object>>();
        foreach (var item in items)
        {
            if (item is null)
            {
                throw new ShardRoutingException($"A batch of {key.DeclaringType.Name} contains a null item; remove it.");
            }

            var shard = map.Strategy.ShardOf(key.Read(item));
            if (!groups.TryGetValue(shard, out var list))
            {
                groups[shard] = list = [];
            }

            list.Add(item);
        }

        return Route.Split(groups.OrderBy(g => g.Key)
            .Select(g => new RoutePart(g.Key, TypedArray(key.DeclaringType, g.Value)))
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

    private static ShardRoutingException NoKey(Type? resultType, Type? parameterType, string? why)
    {
        var reason = why ?? (resultType is null || ShardKeyMember.For(resultType) is null
            ? $"neither the parameters ({parameterType?.Name}) nor the result type declare a [ShardKey]"
            : "the parameters carry no shard key");
        return new ShardRoutingException(
            $"No shard key found: {reason}. Add [ShardKey] to the entity and pass the key in the parameters, or choose the " +
            "shards explicitly: ForKey(key) or OnShard(name) for one shard, AllShards() to fan out on purpose.");
    }
}

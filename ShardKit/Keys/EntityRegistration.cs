using System.Reflection;

namespace ShardKit;

/// <summary>
/// The entity types a data source is told about up front (<see cref="ShardedDataSourceBuilder.AddEntity{T}"/>,
/// <see cref="ShardedDataSourceBuilder.AddEntitiesFromAssembly"/>, or <see cref="ShardKitOptions.EntityTypes"/> and
/// <see cref="ShardKitOptions.EntityAssemblies"/> from configuration), so untyped commands route by their key names
/// from the first call. Two of them sharing a key name with keys of different kinds would make that name ambiguous.
/// </summary>
internal static class EntityRegistration
{
    /// <summary>The types of <paramref name="assembly"/> that declare a <c>[ShardKey]</c>.</summary>
    public static List<Type> FromAssembly(Assembly assembly, List<string> errors)
    {
        Type?[] types;
        try
        {
            types = assembly.GetTypes();
        }
        catch (ReflectionTypeLoadException e)
        {
            types = e.Types; // the types that did load; one that cannot load cannot be a parameter either
        }

        var keyed = new List<Type>();
        var errorsBefore = errors.Count;
        foreach (var type in types)
        {
            if (type is null || type.IsGenericTypeDefinition || type.IsInterface || !HasKeyAttribute(type))
            {
                continue;
            }

            if (Keyed(type, errors))
            {
                keyed.Add(type);
            }
        }

        if (keyed.Count == 0 && errors.Count == errorsBefore)
        {
            errors.Add($"The assembly {assembly.GetName().Name} has no type with a [ShardKey] member; register the assembly " +
                "that declares your entities (typeof(Order).Assembly).");
        }

        return keyed;
    }

    /// <summary>The entity types that options name by type or by assembly; what cannot be found is an error.</summary>
    public static List<Type> FromOptions(ShardKitOptions options, List<string> errors)
    {
        var entities = new List<Type>();
        for (var i = 0; i < options.EntityTypes.Count; i++)
        {
            var name = options.EntityTypes[i];
            var type = string.IsNullOrWhiteSpace(name) ? null : Type.GetType(name, throwOnError: false);
            if (type is null)
            {
                errors.Add($"EntityTypes:{i}: '{name}' is not a type that can be loaded; write it assembly-qualified, " +
                    "as 'MyApp.Orders.Order, MyApp'.");
            }
            else if (!HasKeyAttribute(type))
            {
                errors.Add($"EntityTypes:{i}: {type.Name} has no [ShardKey]; add [ShardKey] to the property that places it.");
            }
            else if (Keyed(type, errors))
            {
                entities.Add(type);
            }
        }

        for (var i = 0; i < options.EntityAssemblies.Count; i++)
        {
            var name = options.EntityAssemblies[i];
            if (Load(name) is { } assembly)
            {
                entities.AddRange(FromAssembly(assembly, errors));
            }
            else
            {
                errors.Add($"EntityAssemblies:{i}: '{name}' is not an assembly that can be loaded; write its name as the " +
                    "project's assembly name (MyApp), and make sure the app references it.");
            }
        }

        return entities.Distinct().ToList();
    }

    /// <summary>
    /// Key names shared by entities whose keys are of different kinds: a parameter of that name could not say which one
    /// it places, and the kinds place equal-looking values differently (6 and "6" hash apart).
    /// </summary>
    public static List<string> Conflicts(IEnumerable<Type> entities)
    {
        var errors = new List<string>();
        var keys = entities.Distinct().Select(ShardKeyMember.For).OfType<ShardKeyMember>();
        foreach (var sameName in keys.GroupBy(k => k.Name, StringComparer.OrdinalIgnoreCase))
        {
            var kinds = sameName.GroupBy(k => k.Kind).ToList();
            if (kinds.Count > 1)
            {
                var declared = string.Join(" and ", kinds.Select(g => g.First()).Select(k => $"{k.DeclaringType.Name}.{k.Name} is {k.Kind}"));
                errors.Add($"The registered entities share the shard key name {sameName.Key} with keys of different kinds ({declared}), " +
                    $"so a parameter named {sameName.Key} could be placed either way. Rename one of the key members, or register " +
                    "only one of the types and target the other's commands with ForKey(key).");
            }
        }

        return errors;
    }

    /// <summary>Builds the shard map, reporting its errors together with <paramref name="entityErrors"/> in one exception.</summary>
    public static TMap CreateMap<TMap>(Func<TMap> create, List<string> entityErrors)
    {
        TMap map;
        try
        {
            map = create();
        }
        catch (ShardConfigurationException e) when (entityErrors.Count > 0)
        {
            throw new ShardConfigurationException([.. e.Errors, .. entityErrors]);
        }

        return entityErrors.Count == 0 ? map : throw new ShardConfigurationException(entityErrors);
    }

    private static bool HasKeyAttribute(Type type)
    {
        const BindingFlags flags = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;
        return type.GetProperties(flags).Any(p => p.IsDefined(typeof(ShardKeyAttribute), inherit: true))
            || type.GetFields(flags).Any(f => f.IsDefined(typeof(ShardKeyAttribute), inherit: true));
    }

    // A type that declares [ShardKey] wrongly (two of them, an unsupported type) is an error of the registration too.
    private static bool Keyed(Type type, List<string> errors)
    {
        try
        {
            return ShardKeyMember.For(type) is not null;
        }
        catch (ShardConfigurationException e)
        {
            errors.AddRange(e.Errors);
            return false;
        }
    }

    private static Assembly? Load(string? name)
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            return null;
        }

        try
        {
            return Assembly.Load(new AssemblyName(name));
        }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException or ArgumentException)
        {
            return null;
        }
    }
}

using System.Collections;
using System.Globalization;
using System.Reflection;
using Microsoft.Extensions.Configuration;

namespace ShardKit;

/// <summary>
/// Checks a ShardKit configuration section against the shape of <see cref="ShardKitOptions"/> before binding: a key
/// the binder would silently ignore (a typo) or a value it cannot convert is reported with its path, the nearest valid
/// key or every valid value. When this finds something the section is not bound at all, so one typo is one error.
/// </summary>
internal static class ConfigurationCheck
{
    public static List<string> Check(IConfiguration section)
    {
        var errors = new List<string>();
        CheckObject(section, typeof(ShardKitOptions), errors);
        return errors;
    }

    private static void CheckObject(IConfiguration section, Type type, List<string> errors)
    {
        var settings = Settings(type);
        foreach (var child in section.GetChildren())
        {
            if (settings.TryGetValue(child.Key, out var property))
            {
                CheckValue(child, property.PropertyType, errors);
            }
            else
            {
                errors.Add($"{child.Path}: '{child.Key}' is not a ShardKit setting; {Suggest(child.Key, settings.Keys)}");
            }
        }
    }

    private static void CheckValue(IConfigurationSection section, Type type, List<string> errors)
    {
        var target = Nullable.GetUnderlyingType(type) ?? type;
        if (ElementType(target, typeof(IDictionary<,>)) is not null)
        {
            return; // list sharding's directory: any key, its values checked by the map validation
        }

        if (ElementType(target, typeof(IList<>)) is { } element)
        {
            foreach (var item in section.GetChildren())
            {
                if (!int.TryParse(item.Key, NumberStyles.None, CultureInfo.InvariantCulture, out _))
                {
                    errors.Add($"{item.Path}: '{item.Key}' is not a list index; write {section.Key} as a JSON array.");
                }
                else
                {
                    CheckValue(item, element, errors);
                }
            }

            return;
        }

        if (IsScalar(target))
        {
            if (section.Value is { } value && Problem(value, target) is { } problem)
            {
                errors.Add($"{section.Path}: '{value}' is {problem}.");
            }

            return;
        }

        CheckObject(section, target, errors);
    }

    private static string? Problem(string value, Type type) => type switch
    {
        _ when type.IsEnum => Enum.TryParse(type, value, ignoreCase: true, out var parsed) && Enum.IsDefined(type, parsed!)
            ? null
            : $"not a valid {type.Name}; use one of {string.Join(", ", Enum.GetNames(type))}",
        _ when type == typeof(int) => int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out _) ? null : "not a whole number",
        _ when type == typeof(bool) => bool.TryParse(value, out _) ? null : "not true or false",
        _ when type == typeof(TimeSpan) => TimeSpan.TryParse(value, CultureInfo.InvariantCulture, out _)
            ? null
            : "not a time span; write it as [d.]hh:mm:ss[.fff], e.g. 00:00:30 for 30 seconds",
        _ => null,
    };

    private static bool IsScalar(Type type) => type.IsPrimitive || type.IsEnum || type == typeof(string) || type == typeof(TimeSpan);

    private static Dictionary<string, PropertyInfo> Settings(Type type) =>
        type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.GetIndexParameters().Length == 0 && (p.CanWrite || typeof(IEnumerable).IsAssignableFrom(p.PropertyType)))
            .ToDictionary(p => p.Name, StringComparer.OrdinalIgnoreCase);

    private static Type? ElementType(Type type, Type generic)
    {
        var match = type.IsGenericType && type.GetGenericTypeDefinition() == generic
            ? type
            : type.GetInterfaces().FirstOrDefault(i => i.IsGenericType && i.GetGenericTypeDefinition() == generic);
        return match?.GetGenericArguments()[^1];
    }

    private static string Suggest(string key, IEnumerable<string> valid)
    {
        var names = valid.Order(StringComparer.Ordinal).ToList();
        var nearest = names.MinBy(n => Distance(key.ToUpperInvariant(), n.ToUpperInvariant()));
        return nearest is not null && Distance(key.ToUpperInvariant(), nearest.ToUpperInvariant()) <= Math.Max(2, key.Length / 3)
            ? $"did you mean '{nearest}'?"
            : $"the settings here are {string.Join(", ", names)}.";
    }

    // Levenshtein distance: small enough inputs (setting names) that the plain two-row version is plenty.
    private static int Distance(string a, string b)
    {
        var previous = Enumerable.Range(0, b.Length + 1).ToArray();
        var current = new int[b.Length + 1];
        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                current[j] = Math.Min(substitution, Math.Min(previous[j], current[j - 1]) + 1);
            }

            (previous, current) = (current, previous);
        }

        return previous[b.Length];
    }
}

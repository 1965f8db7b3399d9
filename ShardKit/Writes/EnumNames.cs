using System.Collections.Frozen;

namespace ShardKit;

/// <summary>The names of an enum's values, looked up without the boxing of <see cref="Enum.ToString()"/>.</summary>
internal static class EnumNames<TEnum>
    where TEnum : struct, Enum
{
    private static readonly FrozenDictionary<TEnum, string> Names =
        Enum.GetValues<TEnum>().Distinct().ToFrozenDictionary(v => v, v => v.ToString());

    /// <summary>The value's name; flag combinations and undeclared values fall back to <see cref="Enum.ToString()"/>.</summary>
    public static string Of(TEnum value) => Names.TryGetValue(value, out var name) ? name : value.ToString();
}

using System.Text.RegularExpressions;

namespace ShardKit;

/// <summary>Table and column names that ShardKit splices into DDL: plain identifiers only, so nothing can be injected.</summary>
internal static partial class SqlNames
{
    /// <summary>True for <c>name</c> or <c>schema.name</c> made of letters, digits and underscores, up to 63 characters each.</summary>
    public static bool IsValid(string? name) => name is not null && Pattern().IsMatch(name);

    /// <summary>True for a single identifier (no schema).</summary>
    public static bool IsValidColumn(string? name) => name is not null && ColumnPattern().IsMatch(name);

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]{0,62}(\\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")]
    private static partial Regex Pattern();

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
    private static partial Regex ColumnPattern();
}

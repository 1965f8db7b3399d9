using System.Collections.Concurrent;
using System.Data;
using System.Reflection;

namespace ShardKit;

/// <summary>
/// How one statement binds one item type in a pipelined batch, worked out once per type and SQL and cached: the text
/// with <c>$n</c> placeholders and a compiled reader per placeholder, with the <see cref="DbType"/> Dapper would give it.
/// </summary>
internal sealed class BatchPlan
{
    private static readonly ConcurrentDictionary<(Type Item, string Sql), BatchPlan?> Cache = new();

    private BatchPlan(string text, BatchParameter[] parameters)
    {
        Text = text;
        Parameters = parameters;
    }

    /// <summary>The statement with positional placeholders.</summary>
    public string Text { get; }

    /// <summary>The readers of <c>$1</c>, <c>$2</c>, … in order.</summary>
    public BatchParameter[] Parameters { get; }

    /// <summary>
    /// The plan for items of <paramref name="itemType"/>, or null when only Dapper's per-row path binds the statement
    /// as Dapper would: several statements in one text, <c>{=literal}</c> replacements, list expansion, type handlers,
    /// or member types Dapper treats specially.
    /// </summary>
    public static BatchPlan? For(Type itemType, string sql) =>
        Cache.GetOrAdd((itemType, sql), static k => Build(k.Item, k.Sql));

    private static BatchPlan? Build(Type itemType, string sql)
    {
        if (sql.Contains("{=", StringComparison.Ordinal))
        {
            return null;
        }

        // Dapper binds the public readable properties named in the text, matched case-insensitively.
        var members = new Dictionary<string, PropertyInfo>(StringComparer.OrdinalIgnoreCase);
        foreach (var property in itemType.GetProperties(BindingFlags.Instance | BindingFlags.Public))
        {
            if (property.GetGetMethod() is not null && property.GetIndexParameters().Length == 0)
            {
                members.TryAdd(property.Name, property);
            }
        }

        var positions = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        var parameters = new List<BatchParameter>();
        var bindable = true;
        var text = SqlPlaceholders.ToPositional(sql, name =>
        {
            if (positions.TryGetValue(name, out var known))
            {
                return known;
            }

            if (!members.TryGetValue(name, out var property))
            {
                return 0;
            }

            if (BatchParameter.For(itemType, property) is not { } parameter)
            {
                bindable = false;
                return 0;
            }

            parameters.Add(parameter);
            return positions[name] = parameters.Count;
        });
        return text is not null && bindable ? new BatchPlan(text, [.. parameters]) : null;
    }
}

namespace ShardKit;

/// <summary>
/// Marks the property whose value decides which shard a row lives on. One per type. Supported types:
/// <see cref="short"/>, <see cref="int"/>, <see cref="long"/>, <see cref="Guid"/>, <see cref="string"/>; range and list
/// sharding also <see cref="DateTime"/> and <see cref="DateTimeOffset"/>. Nullable forms are allowed, but a null key
/// cannot be routed.
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field, AllowMultiple = false, Inherited = true)]
public sealed class ShardKeyAttribute : Attribute
{
    /// <summary>Marks the shard key; its column is the property name in snake_case.</summary>
    public ShardKeyAttribute()
    {
    }

    /// <summary>Marks the shard key and names its column.</summary>
    public ShardKeyAttribute(string column) => Column = column;

    /// <summary>The column that holds the key, when it is not the property name in snake_case.</summary>
    public string? Column { get; }
}

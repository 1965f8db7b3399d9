namespace ShardKit;

/// <summary>
/// Names the column a property is loaded into by <see cref="ShardedConnection.BulkInsertAsync{T}(string, IEnumerable{T}, BulkInsertOptions?, CancellationToken)"/>
/// when it is not the property name in snake_case. To leave a property out, mark it
/// <see cref="System.ComponentModel.DataAnnotations.Schema.NotMappedAttribute"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Property, AllowMultiple = false, Inherited = true)]
public sealed class ShardColumnAttribute : Attribute
{
    /// <summary>Loads the property into the column <paramref name="name"/>.</summary>
    public ShardColumnAttribute(string name) => Name = name;

    /// <summary>The column's name, as PostgreSQL stores it (unquoted names are lower case).</summary>
    public string Name { get; }
}

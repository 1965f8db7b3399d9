namespace ShardKit;

/// <summary>A column of the target table as PostgreSQL describes it; domains are described by their base type.</summary>
/// <param name="Name">The column name as stored.</param>
/// <param name="TypeName">The type's name without schema (<c>int4</c>, <c>timestamptz</c>, <c>mood</c>).</param>
/// <param name="DataTypeName">The schema-qualified type name Npgsql writes by (<c>pg_catalog.int4</c>).</param>
internal sealed record TableColumn(string Name, string TypeName, string DataTypeName);

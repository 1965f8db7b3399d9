using System.Text;

namespace ShardKit;

/// <summary>
/// What one load writes: the COPY statement and, in its column order, each column's writer. Every mapped column must
/// exist in the table; an explicit column list picks and orders a subset.
/// </summary>
internal sealed class BulkPlan<T>
{
    private BulkPlan(string copySql, BulkColumn<T>[] columns)
    {
        CopySql = copySql;
        Columns = columns;
    }

    public string CopySql { get; }

    public BulkColumn<T>[] Columns { get; }

    public static BulkPlan<T> Create(string table, IReadOnlyList<TableColumn> tableColumns, IReadOnlyList<string>? only)
    {
        var members = BulkRowMap<T>.Members;
        var chosen = only is null ? members : only.Select(name => Pick(members, name)).ToArray();
        var columns = chosen.Select(member =>
        {
            var column = Find(tableColumns, member.Column) ?? throw new BulkRowError(
                $"{typeof(T).Name}.{member.Property} maps to column '{member.Column}', which table {table} does not have. " +
                "Name its column with [ShardColumn(\"…\")], leave it out with [NotMapped], or list the columns to load in BulkInsertOptions.Columns.",
                rowIndex: null, member.Property);
            return new BulkColumn<T>(member.Property, column.Name, column.DataTypeName, member.WriterFor(column.TypeName, out _));
        }).ToArray();

        var sql = new StringBuilder("COPY ").Append(table).Append(" (");
        sql.AppendJoin(", ", columns.Select(c => "\"" + c.Column.Replace("\"", "\"\"", StringComparison.Ordinal) + "\""));
        sql.Append(") FROM STDIN (FORMAT BINARY)");
        return new BulkPlan<T>(sql.ToString(), columns);
    }

    private static BulkMember<T> Pick(IReadOnlyList<BulkMember<T>> members, string column) =>
        members.FirstOrDefault(m => string.Equals(m.Column, column, StringComparison.Ordinal))
        ?? members.FirstOrDefault(m => string.Equals(m.Column, column, StringComparison.OrdinalIgnoreCase))
        ?? throw new BulkRowError(
            $"BulkInsertOptions.Columns names '{column}', but no property of {typeof(T).Name} maps to it; its columns are " +
            string.Join(", ", members.Select(m => m.Column)) + ".", rowIndex: null, property: null);

    // As PostgreSQL folds unquoted names: exact first, then lower case.
    private static TableColumn? Find(IReadOnlyList<TableColumn> columns, string name) =>
        columns.FirstOrDefault(c => string.Equals(c.Name, name, StringComparison.Ordinal))
        ?? columns.FirstOrDefault(c => string.Equals(c.Name, name.ToLowerInvariant(), StringComparison.Ordinal));
}

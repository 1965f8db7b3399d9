namespace ShardKit;

/// <summary>A row a shard's server refused, mapped back to the caller's input.</summary>
/// <param name="RowIndex">The row's zero-based position in the input.</param>
/// <param name="Property">The row type's property whose column the server named, when it named one.</param>
/// <param name="Description">"row 12 (Order.Total, column 'total')", for the error message.</param>
internal sealed record RefusedInputRow(long RowIndex, string? Property, string Description);

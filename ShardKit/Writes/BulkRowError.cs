namespace ShardKit;

/// <summary>
/// The input is at fault: a null row, a null or unplaceable key, a value its column cannot take, a missing column.
/// Internal: the load turns it into a <see cref="BulkInsertException"/> once every shard is rolled back.
/// </summary>
internal sealed class BulkRowError(string message, long? rowIndex, string? property, Exception? innerException = null)
    : Exception(message, innerException)
{
    public long? RowIndex { get; } = rowIndex;

    public string? Property { get; } = property;
}

namespace ShardKit;

/// <summary>One shard's share of a batch: its items and, for each, its index in the caller's list (for errors).</summary>
internal sealed class BatchGroup
{
    public List<object> Items { get; } = [];

    public List<int> Indexes { get; } = [];

    public int Count => Items.Count;

    public void Add(object item, int index)
    {
        Items.Add(item);
        Indexes.Add(index);
    }

    /// <summary>The items' one runtime type, or null when they differ (each row is then bound by Dapper on its own).</summary>
    public Type? ItemType()
    {
        var type = Items[0].GetType();
        foreach (var item in Items)
        {
            if (item.GetType() != type)
            {
                return null;
            }
        }

        return type;
    }
}

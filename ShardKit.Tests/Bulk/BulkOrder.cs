namespace ShardKit.Tests.Bulk;

/// <summary>The row most bulk tests load: an order placed by its customer.</summary>
public sealed class BulkOrder
{
    public const string Ddl = "create table {0} (customer_id bigint not null, id bigint not null, total numeric not null, created_at timestamptz not null)";

    [ShardKey] public long CustomerId { get; init; }

    public long Id { get; init; }

    public decimal Total { get; init; }

    public DateTime CreatedAt { get; init; }

    public static IEnumerable<BulkOrder> Many(int count, int firstId = 0) =>
        Enumerable.Range(firstId, count).Select(i => new BulkOrder
        {
            CustomerId = i * 7919L % 100_003,
            Id = i,
            Total = i / 100m,
            CreatedAt = DateTime.UnixEpoch.AddSeconds(i),
        });
}

namespace ShardKit.Benchmarks;

/// <summary>The row the benchmarks read and write: an order placed by its customer.</summary>
public sealed class BenchOrder
{
    /// <summary>The shard key.</summary>
    [ShardKey] public long CustomerId { get; init; }

    /// <summary>The order id.</summary>
    public long Id { get; init; }

    /// <summary>The order total.</summary>
    public decimal Total { get; init; }

    /// <summary>When the order was placed.</summary>
    public DateTime CreatedAt { get; init; }
}

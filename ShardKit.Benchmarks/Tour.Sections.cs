namespace ShardKit.Benchmarks;

public static partial class Tour
{
    private static Task ShowFanOutAsync(ShardedConnection db) => Task.CompletedTask;

    private static Task ShowDistributedTransactionAsync(ShardedConnection db) => Task.CompletedTask;
}

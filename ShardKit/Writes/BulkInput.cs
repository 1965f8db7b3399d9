namespace ShardKit;

/// <summary>The producer loops: read the input once, in order, and hand each row to the router.</summary>
internal static class BulkInput
{
    public static async Task ProduceAsync<T>(IEnumerable<T> rows, BulkRouter<T> router, CancellationToken cancellationToken)
    {
        foreach (var row in rows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            await router.AddAsync(row, cancellationToken).ConfigureAwait(false);
        }

        await router.CompleteAsync(cancellationToken).ConfigureAwait(false);
    }

    public static async Task ProduceAsync<T>(IAsyncEnumerable<T> rows, BulkRouter<T> router, CancellationToken cancellationToken)
    {
        await foreach (var row in rows.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            cancellationToken.ThrowIfCancellationRequested();
            await router.AddAsync(row, cancellationToken).ConfigureAwait(false);
        }

        await router.CompleteAsync(cancellationToken).ConfigureAwait(false);
    }
}

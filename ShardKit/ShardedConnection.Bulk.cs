namespace ShardKit;

// RS0026 guards against an overload with optional parameters being added later; these two are the shape callers expect
// (Dapper-style optional options and token) and differ in the input's type, so no call can bind to the wrong one.
#pragma warning disable RS0026
public sealed partial class ShardedConnection
{
    /// <summary>
    /// Loads <paramref name="rows"/> into <paramref name="table"/> on every shard in parallel with binary <c>COPY</c>:
    /// each row goes to the shard its <c>[ShardKey]</c> names. The input is read once and never held whole: rows
    /// travel in batches through a bounded queue per shard. Each shard's COPY runs in a transaction, and all of them
    /// commit only after every COPY succeeded; any failure before that leaves every shard without the load's rows.
    /// Columns are the public properties of <typeparamref name="T"/> in snake_case, unless named by
    /// <see cref="ShardColumnAttribute"/> or left out by <c>[NotMapped]</c>; enums are written as their name into text
    /// columns and as their value into integer columns.
    /// </summary>
    /// <param name="table">The table, as SQL would name it (it is placed in the COPY statement as given).</param>
    /// <param name="rows">The rows; read once, in order.</param>
    /// <param name="options">Columns, batch size and queue depth; <see cref="BulkInsertOptions.Default"/> when null.</param>
    /// <param name="cancellationToken">Stops the load; nothing is kept unless the commit step had begun.</param>
    /// <exception cref="BulkInsertException">
    /// The load failed; it names the failed shards, what each shard kept, and the row at fault with its property when
    /// they are known (see <see cref="BulkInsertException.RowIndex"/> for exactly when).
    /// </exception>
    public Task<BulkInsertResult> BulkInsertAsync<T>(string table, IEnumerable<T> rows, BulkInsertOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return LoadAsync<T>(table, options, (router, token) => BulkInput.ProduceAsync(rows, router, token), cancellationToken);
    }

    /// <summary>
    /// Loads an asynchronous stream of rows as
    /// <see cref="BulkInsertAsync{T}(string, IEnumerable{T}, BulkInsertOptions?, CancellationToken)"/> does; the stream is
    /// read no faster than the shards take its rows.
    /// </summary>
    /// <param name="table">The table, as SQL would name it.</param>
    /// <param name="rows">The rows; enumerated once, with the load's cancellation token.</param>
    /// <param name="options">Columns, batch size and queue depth; <see cref="BulkInsertOptions.Default"/> when null.</param>
    /// <param name="cancellationToken">Stops the load; nothing is kept unless the commit step had begun.</param>
    /// <exception cref="BulkInsertException">
    /// The load failed; it names the failed shards, what each shard kept, and the row at fault with its property when
    /// they are known (see <see cref="BulkInsertException.RowIndex"/> for exactly when).
    /// </exception>
    public Task<BulkInsertResult> BulkInsertAsync<T>(string table, IAsyncEnumerable<T> rows, BulkInsertOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return LoadAsync<T>(table, options, (router, token) => BulkInput.ProduceAsync(rows, router, token), cancellationToken);
    }

    private async Task<BulkInsertResult> LoadAsync<T>(string table, BulkInsertOptions? options,
        Func<BulkRouter<T>, CancellationToken, Task> produce, CancellationToken cancellationToken)
    {
        using var operation = EnterOperation();
        if (options?.AllOrNothing != true || Session.Enlistment is not null)
        {
            return await BulkLoad<T>.RunAsync(Session, table, options, produce, cancellationToken).ConfigureAwait(false);
        }

        var transaction = await BeginDistributedTransactionAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (transaction.ConfigureAwait(false))
        {
            // A failure anywhere leaves the transaction uncommitted, and disposing it rolls back every shard.
            var result = await BulkLoad<T>.RunAsync(Session, table, options, produce, cancellationToken).ConfigureAwait(false);
            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            return result;
        }
    }
}
#pragma warning restore RS0026

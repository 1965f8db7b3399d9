using Dapper;

namespace ShardKit;

/// <summary>
/// The result sets of one <c>QueryMultiple</c> on one shard, read in order as with Dapper's
/// <see cref="SqlMapper.GridReader"/>. It holds its <see cref="ShardedConnection"/> until disposed: another call on
/// the connection meanwhile is refused with <see cref="ShardedConnectionBusyException"/>, so dispose it (<c>using</c>)
/// as soon as the last grid is read.
/// </summary>
/// <example>
/// <code>
/// await using (var grid = await db.QueryMultipleAsync(
///     "select * from orders where customer_id = @CustomerId; select count(*) from orders where customer_id = @CustomerId",
///     new { CustomerId = 42L }))
/// {
///     var orders = await grid.ReadAsync&lt;Order&gt;();
///     var count = await grid.ReadSingleAsync&lt;long&gt;();
/// }
/// </code>
/// </example>
public sealed class ShardGridReader : IDisposable, IAsyncDisposable
{
    private readonly SqlMapper.GridReader _grid;
    private ShardSession.OperationScope _operation;
    private bool _disposed;

    internal ShardGridReader(SqlMapper.GridReader grid, ShardSession.OperationScope operation, string shard)
    {
        _grid = grid;
        _operation = operation;
        Shard = shard;
    }

    /// <summary>The name of the shard the query ran on.</summary>
    public string Shard { get; }

    /// <summary>True when every result set has been read.</summary>
    public bool IsConsumed => _grid.IsConsumed;

    /// <summary>Reads the next result set as dynamic rows (<c>IDictionary&lt;string, object&gt;</c> by column name).</summary>
    public Task<IEnumerable<dynamic>> ReadAsync(bool buffered = true) => Open().ReadAsync(buffered);

    /// <summary>Reads the next result set, mapped to <typeparamref name="T"/>.</summary>
    public Task<IEnumerable<T>> ReadAsync<T>(bool buffered = true) => Open().ReadAsync<T>(buffered);

    /// <summary>The first row of the next result set; throws when it has none.</summary>
    public Task<T> ReadFirstAsync<T>() => Open().ReadFirstAsync<T>();

    /// <summary>The first row of the next result set, or <c>default</c>.</summary>
    public Task<T?> ReadFirstOrDefaultAsync<T>() => Open().ReadFirstOrDefaultAsync<T>();

    /// <summary>The only row of the next result set; throws when it has none or more than one.</summary>
    public Task<T> ReadSingleAsync<T>() => Open().ReadSingleAsync<T>();

    /// <summary>The only row of the next result set, or <c>default</c>; throws when it has more than one.</summary>
    public Task<T?> ReadSingleOrDefaultAsync<T>() => Open().ReadSingleOrDefaultAsync<T>();

    /// <summary>Streams the next result set; read it to the end before the next one.</summary>
    public IAsyncEnumerable<T> ReadUnbufferedAsync<T>() => Open().ReadUnbufferedAsync<T>();

    /// <summary>Reads the next result set as dynamic rows.</summary>
    public IEnumerable<dynamic> Read(bool buffered = true) => Open().Read(buffered);

    /// <summary>Reads the next result set, mapped to <typeparamref name="T"/>.</summary>
    public IEnumerable<T> Read<T>(bool buffered = true) => Open().Read<T>(buffered);

    /// <summary>The first row of the next result set; throws when it has none.</summary>
    public T ReadFirst<T>() => Open().ReadFirst<T>();

    /// <summary>The first row of the next result set, or <c>default</c>.</summary>
    public T? ReadFirstOrDefault<T>() => Open().ReadFirstOrDefault<T>();

    /// <summary>The only row of the next result set; throws when it has none or more than one.</summary>
    public T ReadSingle<T>() => Open().ReadSingle<T>();

    /// <summary>The only row of the next result set, or <c>default</c>; throws when it has more than one.</summary>
    public T? ReadSingleOrDefault<T>() => Open().ReadSingleOrDefault<T>();

    /// <summary>Reads the next result set, each row split at <paramref name="splitOn"/> into two objects combined by <paramref name="map"/>.</summary>
    public IEnumerable<TReturn> Read<TFirst, TSecond, TReturn>(Func<TFirst, TSecond, TReturn> map, string splitOn = "Id", bool buffered = true) =>
        Open().Read(map, splitOn, buffered);

    /// <summary>Reads the next result set, each row split at <paramref name="splitOn"/> into three objects combined by <paramref name="map"/>.</summary>
    public IEnumerable<TReturn> Read<TFirst, TSecond, TThird, TReturn>(Func<TFirst, TSecond, TThird, TReturn> map, string splitOn = "Id",
        bool buffered = true) =>
        Open().Read(map, splitOn, buffered);

    /// <summary>Closes the reader and frees the connection for its next operation.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            _grid.Dispose();
        }
        finally
        {
            Release();
        }
    }

    /// <summary>Closes the reader and frees the connection for its next operation.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            await _grid.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            Release();
        }
    }

    private void Release()
    {
        _operation.Dispose();
        _operation = default;
    }

    private SqlMapper.GridReader Open()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _grid;
    }
}

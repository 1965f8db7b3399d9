using System.Data;
using Dapper;

namespace ShardKit;

// Dapper's non-generic Query: rows as dynamic objects (Dapper's DapperRow, also an IDictionary<string, object> by
// column name), routed like Query<T>. There is no result type to find a key name in, so the key comes from the
// parameters' own [ShardKey] or a known key name (register entities with AddEntity<T>()).
public abstract partial class ShardCommandTarget
{
    /// <summary>Runs a query on the shard that owns its key and returns the rows as dynamic objects.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<IEnumerable<dynamic>> QueryAsync(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        QueryAsync<dynamic>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs a query on the key's shard and returns the rows as dynamic objects; a key list is split per shard.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public Task<IEnumerable<dynamic>> QueryAsync(CommandDefinition command) => QueryAsync<dynamic>(command);

    /// <summary>Runs a query on the shard that owns its key and returns the rows as dynamic objects.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public IEnumerable<dynamic> Query(string sql, object? param = null, IDbTransaction? transaction = null,
        int? commandTimeout = null, CommandType? commandType = null) =>
        Query<dynamic>(new CommandDefinition(sql, param, transaction, commandTimeout, commandType));

    /// <summary>Runs a query on the key's shard and returns the rows as dynamic objects; a key list is split per shard.</summary>
    /// <include file="RoutedDocs.xml" path="docs/routed/*" />
    public IEnumerable<dynamic> Query(CommandDefinition command) => Query<dynamic>(command);
}

namespace ShardKit;

/// <summary>The clauses of a statement's top level that make per-shard answers differ from one database's answer.</summary>
[Flags]
internal enum SqlClauses
{
    None = 0,
    OrderBy = 1,
    Limit = 2,
    Offset = 4,
    Distinct = 8,
    GroupBy = 16,
    Having = 32,
    Aggregate = 64,
}

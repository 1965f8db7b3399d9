namespace ShardKit;

/// <summary>What one <see cref="ShardedDataSource.RecoverAsync"/> run found and did. Counts are of global ids.</summary>
public sealed record RecoveryReport
{
    /// <summary>Prepared transactions with a commit decision that this run committed (on at least one shard).</summary>
    public int Committed { get; init; }

    /// <summary>Prepared transactions with no commit decision, older than the threshold, that this run rolled back.</summary>
    public int RolledBack { get; init; }

    /// <summary>Prepared transactions left alone: too young to judge, or coordinated by a shard outside this map.</summary>
    public int Skipped { get; init; }

    /// <summary>Decision log rows removed because no shard holds their transaction prepared any more.</summary>
    public int DecisionsCleaned { get; init; }

    /// <summary>Shards this run could not read or finish; their transactions wait for the next run.</summary>
    public IReadOnlyList<ShardFailure> Failures { get; init; } = [];

    /// <summary>True when every shard answered.</summary>
    public bool IsComplete => Failures.Count == 0;
}

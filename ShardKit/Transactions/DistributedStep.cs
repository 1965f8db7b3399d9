namespace ShardKit;

/// <summary>The points of a two-phase commit where tests inject faults (see <c>ShardedDataSource.OnDistributedStep</c>).</summary>
internal enum DistributedStep
{
    /// <summary>Every shard's work is done; nothing is prepared yet.</summary>
    BeforePrepare,

    /// <summary>Just before one shard's <c>PREPARE TRANSACTION</c> (shards prepare in parallel; a participating
    /// coordinator is not prepared).</summary>
    PrepareShard,

    /// <summary>Every shard but a participating coordinator is prepared; the decision is not written yet (and the
    /// coordinator's own part, which commits with it, is still open).</summary>
    BeforeDecision,

    /// <summary>The commit decision is durable (with a participating coordinator's own part); no <c>COMMIT PREPARED</c>
    /// has run yet.</summary>
    AfterDecision,

    /// <summary>Just before one shard's <c>COMMIT PREPARED</c> (shards commit in parallel).</summary>
    CommitPreparedShard,
}

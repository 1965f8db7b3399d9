namespace ShardKit;

/// <summary>How a bucket move runs (<see cref="ShardResharding.MoveBucketsAsync"/>).</summary>
public sealed class MoveOptions
{
    /// <summary>
    /// How many scans of the source copy chunks at once (each with a connection on either side); 1 by default. Each scan
    /// reads the whole source table for its group of buckets, and scans at once compete with the app's own writers for
    /// the servers' cores: on a 2-core machine with 2 shards, 4 at once made the copy twice as slow and other buckets'
    /// writers' p99 in the copy's second about 5 times that of 1. Raise it where the servers have idle cores.
    /// </summary>
    public int Parallelism { get; set; } = 1;

    /// <summary>
    /// How much of the source table's data one copy scan may carry, in bytes; 64 MiB by default. Each scan reads the whole
    /// source table once for its group of buckets and commits them on the target in one transaction: buckets are grouped
    /// up to this share of the table's size (by its size on disk and the bucket count; a limit never under 8 buckets).
    /// Larger: fewer scans of the table (moving a third of 1,024 buckets of a 1 GiB table takes 6 scans instead of 43);
    /// smaller: less copied again when a stopped move resumes.
    /// </summary>
    public long CopyScanBytes { get; set; } = 64L << 20;

    /// <summary>
    /// The most rows a second the copy moves, all its scans together; null (the default) copies as fast as the servers go.
    /// A copy at full speed takes a core on the source and one on the target while it runs: where the servers have no
    /// core to spare, the app's writes that meet it wait for one (on a 2-core machine hosting both shards, a hand-written
    /// COPY of the same rows at full speed raised other writes' p99 1.5-5 times while it ran). Pacing the copy spreads
    /// that work over a longer copy, and for that longer the source holds the copy's snapshot (vacuum waits), the slot
    /// holds the WAL written since (bounded by <c>max_slot_wal_keep_size</c>), and each scan is one statement on either
    /// side (a <c>statement_timeout</c> of the mover's role must leave room for it). A resumed move copies at the rate of
    /// the options the resume is given.
    /// </summary>
    public long? CopyRowsPerSecond { get; set; }

    /// <summary>
    /// The catch-up gate: the bucket is frozen only once the target is at most this many bytes of the source's WAL behind
    /// (so the frozen drain is short); 128 KiB by default. A catch-up round that takes under 50 ms also opens the gate,
    /// and after 50 rounds the freeze goes ahead whatever the lag (busy writers of other buckets keep the WAL growing).
    /// </summary>
    public long MaxLagBytes { get; set; } = 128 << 10;

    /// <summary>
    /// How long the freeze waits for transactions that hold the bucket (an open transaction that wrote it, a prepared
    /// transaction) before it lets go and tries again; 2 seconds by default. New writers of the bucket wait behind it.
    /// </summary>
    public TimeSpan FreezeLockTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How many times the freeze is tried before the move stops (resumable); 5 by default.</summary>
    public int FreezeAttempts { get; set; } = 5;

    /// <summary>
    /// Compare chunked checksums of the buckets' rows on both sides before the switch (an exact check); on by default.
    /// The scan of each moved table runs before the freeze, on snapshots taken at one point of the source's history (the
    /// buckets' writers wait for one round trip while it is taken); the freeze then compares only the rows written since,
    /// or every row again when it cannot tell which (a truncate came) or finds a difference.
    /// </summary>
    public bool Verify { get; set; } = true;

    /// <summary>
    /// How long after the switch the source's copies are deleted, so that every app has the new map by then, also one
    /// that missed the notification and reads the catalog only every <see cref="StoredMapOptions.CheckInterval"/>
    /// (until it does, its reads of these buckets go to the source). Null (the default): twice the moving data source's
    /// own CheckInterval (10 seconds with its defaults). Set it to at least your apps' longest CheckInterval.
    /// </summary>
    public TimeSpan? CleanupDelay { get; set; }

    /// <summary>
    /// How long a move waits after announcing itself (a new map epoch that says a move is under way) before it copies
    /// rows, so every app following the map reads fan-outs with the moving buckets' copies filtered out, also one that
    /// missed the notification. Null (the default): twice the moving data source's own
    /// <see cref="StoredMapOptions.CheckInterval"/> (10 seconds with its defaults). Set it to at least your apps' longest CheckInterval.
    /// </summary>
    public TimeSpan? AnnounceWait { get; set; }

    /// <summary>Rows deleted per statement when the source's copies are removed; 5,000 by default.</summary>
    public int DeleteBatchSize { get; set; } = 5000;

    /// <summary>The pause between two delete statements (throttling); 10 ms by default.</summary>
    public TimeSpan DeletePause { get; set; } = TimeSpan.FromMilliseconds(10);

    /// <summary>
    /// Migrations to apply to every shard (so a new shard reaches the others' version) before any bucket moves: the
    /// move's preflight refuses a target whose tables differ from the source's. Null (the default) applies none.
    /// </summary>
    public IReadOnlyList<Migration>? Migrations { get; set; }

    /// <summary>How <see cref="Migrations"/> run (history table, canary, parallelism); the defaults when null.</summary>
    public MigrationOptions? MigrationOptions { get; set; }

    internal void Validate()
    {
        var errors = new List<string>();
        void Require(bool ok, string error)
        {
            if (!ok)
            {
                errors.Add(error);
            }
        }

        Require(Parallelism >= 1, $"Parallelism is {Parallelism}; set at least 1");
        Require(CopyScanBytes >= 1, $"CopyScanBytes is {CopyScanBytes}; set at least 1");
        Require(CopyRowsPerSecond is null or >= 1, $"CopyRowsPerSecond is {CopyRowsPerSecond}; set at least 1 row a second, or null to copy at full speed");
        Require(MaxLagBytes >= 0, $"MaxLagBytes is {MaxLagBytes}; set 0 or more");
        Require(FreezeLockTimeout > TimeSpan.Zero, $"FreezeLockTimeout is {FreezeLockTimeout}; set a positive time");
        Require(FreezeAttempts >= 1, $"FreezeAttempts is {FreezeAttempts}; set at least 1");
        Require(DeleteBatchSize >= 1, $"DeleteBatchSize is {DeleteBatchSize}; set at least 1");
        Require(CleanupDelay is null || CleanupDelay >= TimeSpan.Zero, $"CleanupDelay is {CleanupDelay}; set zero or more, or null for the default");
        Require(DeletePause >= TimeSpan.Zero, $"DeletePause is {DeletePause}; set zero or more");
        Require(AnnounceWait is null || AnnounceWait >= TimeSpan.Zero, $"AnnounceWait is {AnnounceWait}; set zero or more, or null for the default");
        if (errors.Count > 0)
        {
            throw new ArgumentException("MoveOptions: " + string.Join("; ", errors) + ".");
        }
    }
}

/// <summary>A step of a bucket move, as the catalog records it.</summary>
public enum MoveState
{
    /// <summary>Recorded; nothing created yet.</summary>
    Started,

    /// <summary>The slot and publication exist; the bucket's rows are being copied.</summary>
    Copying,

    /// <summary>Copied; the slot's changes are being applied to the target.</summary>
    CatchingUp,

    /// <summary>The source gave the bucket up; the target and the catalog are being switched.</summary>
    Switching,

    /// <summary>The target owns the bucket; the source's copies are being removed.</summary>
    Switched,

    /// <summary>Finished: the target owns the bucket and nothing of the move is left.</summary>
    Done,

    /// <summary>Cancelled before the switch: the source still owns the bucket and nothing of the move is left.</summary>
    Cancelled,
}

/// <summary>Where a move is, reported as it runs.</summary>
/// <param name="MoveId">The move's id (resume or cancel it by this id).</param>
/// <param name="State">The step it is in.</param>
/// <param name="RowsCopied">Rows copied so far.</param>
/// <param name="LagBytes">How far the target is behind the source's WAL (catch-up), or -1 before catch-up.</param>
/// <param name="Elapsed">Time since this run of the move started.</param>
/// <param name="Pause">How long the bucket's writers waited at the switch, once it is done.</param>
/// <param name="RowsEstimate">The rows the copy is expected to move (from the source's statistics), or -1 when unknown.</param>
public sealed record MoveProgress(string MoveId, MoveState State, long RowsCopied, long LagBytes, TimeSpan Elapsed, TimeSpan? Pause,
    long RowsEstimate = -1);

/// <summary>A finished move.</summary>
/// <param name="MoveId">The move's id.</param>
/// <param name="Buckets">The buckets moved.</param>
/// <param name="Source">The shard that owned them.</param>
/// <param name="Target">The shard that owns them now.</param>
/// <param name="RowsCopied">Rows copied (under the slot's snapshot).</param>
/// <param name="Pause">How long the buckets' writers waited: from the freeze to the target's commit of taking them (the catalog's switch follows).</param>
/// <param name="Duration">The whole move.</param>
/// <param name="Epoch">The map's epoch after the switch.</param>
public sealed record MoveResult(string MoveId, IReadOnlyList<int> Buckets, string Source, string Target, long RowsCopied,
    TimeSpan Pause, TimeSpan Duration, long Epoch);

/// <summary>A move as the catalog records it.</summary>
/// <param name="MoveId">The move's id.</param>
/// <param name="Buckets">Its buckets.</param>
/// <param name="Source">The shard the buckets leave.</param>
/// <param name="Target">The shard they go to.</param>
/// <param name="State">Its step.</param>
/// <param name="RowsCopied">Rows copied.</param>
/// <param name="PauseMs">The writers' pause at the switch, in milliseconds, once switched.</param>
/// <param name="Error">The last error that stopped it, if any.</param>
public sealed record MoveInfo(string MoveId, IReadOnlyList<int> Buckets, string Source, string Target, MoveState State, long RowsCopied,
    double? PauseMs, string? Error);

/// <summary>A table whose rows move with their buckets: its name (optionally schema-qualified) and its shard-key column.</summary>
/// <param name="Table">The table, a plain identifier or schema.table.</param>
/// <param name="KeyColumn">The column whose hash places the row (smallint, integer, bigint, text, varchar or uuid).</param>
public sealed record ShardedTable(string Table, string KeyColumn);

/// <summary>Rows a shard holds of buckets it does not own (a placement audit); 0 everywhere when placement is right.</summary>
/// <param name="Shard">The shard.</param>
/// <param name="Table">The table.</param>
/// <param name="Rows">Rows whose bucket the shard does not own.</param>
public sealed record MisplacedRows(string Shard, string Table, long Rows);

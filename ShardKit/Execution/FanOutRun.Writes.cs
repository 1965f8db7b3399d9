using System.Collections.Concurrent;

namespace ShardKit;

/// <summary>What a write run kept on each shard, for the error that reports a failed broadcast or batch.</summary>
internal sealed partial class FanOutRun
{
    private readonly ConcurrentDictionary<int, bool> _sent = new();
    private readonly ConcurrentDictionary<int, Exception> _stopped = new();

    /// <summary>
    /// Marks the shard's point of no return: its statement (autocommit) or its commit is about to be sent, so a lost
    /// answer from now on leaves the outcome there unknown.
    /// </summary>
    public void MarkSent(int shard) => _sent.TryAdd(shard, true);

    /// <summary>
    /// The error for a write that failed: the failed shards, then where it applied (with its rows), where it kept
    /// nothing, and where it is in doubt.
    /// </summary>
    /// <param name="succeeded">The shards that finished their write, with the rows affected.</param>
    /// <param name="committed">The write ran in a transaction per shard: say committed / rolled back.</param>
    /// <param name="atomic">A server error on a shard means it kept nothing (one statement, or a transaction).</param>
    public BroadcastWriteException WriteFailure(IReadOnlyList<(int Shard, int Rows)> succeeded, bool committed, bool atomic)
    {
        var rows = succeeded.OrderBy(s => s.Shard).ToDictionary(s => NameOf(s.Shard), s => s.Rows);
        var notApplied = new List<string>();
        var inDoubt = new List<string>();
        foreach (var shard in Shards.Where(s => !rows.ContainsKey(NameOf(s))))
        {
            var error = _failures.TryGetValue(shard, out var failure) ? failure.Error : _stopped.GetValueOrDefault(shard);
            var keptNothing = !_sent.ContainsKey(shard) || (atomic && ShardErrors.AnsweredByServer(error));
            (keptNothing ? notApplied : inDoubt).Add(NameOf(shard));
        }

        return BroadcastWriteException.Create(Operation, Failures, rows, notApplied, inDoubt, committed, atomic);
    }

    private void Stopped(int shard, Exception error) => _stopped.TryAdd(shard, error);
}

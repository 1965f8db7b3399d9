namespace ShardKit.Tests.Distributed;

/// <summary>
/// Simulates an application that dies in the middle of a commit: the commit stops forever at a chosen step, and every
/// connection it had is reset through the proxies (what the server sees when a process dies). Nothing is disposed.
/// </summary>
internal static class Abandon
{
    /// <summary>Runs <paramref name="work"/> in a distributed transaction and "crashes" at <paramref name="step"/> (on
    /// <paramref name="shard"/> for per-shard steps, any shard when null); returns the transaction's global id.</summary>
    public static async Task<string?> CommitAndCrashAtAsync(DistributedShards s, DistributedStep step, string? shard,
        Func<ShardedConnection, Task> work)
    {
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var never = new TaskCompletionSource();
        s.Source.OnDistributedStep = (at, on) =>
        {
            if (at == step && (shard is null || on is null || on == shard))
            {
                reached.TrySetResult();
                return never.Task;
            }

            return Task.CompletedTask;
        };

        var db = s.Source.CreateConnection();
        var tx = db.BeginDistributedTransaction();
        await work(db);
        var commit = tx.CommitAsync();
        var first = await Task.WhenAny(commit, reached.Task);
        Assert.That(first, Is.SameAs(reached.Task), () => $"the commit ended before reaching {step}: {commit.Exception?.GetBaseException().Message}");
        Crash(s);
        s.Source.OnDistributedStep = null;
        return tx.GlobalId;
    }

    /// <summary>Resets every connection through the proxies, then accepts new ones again.</summary>
    public static void Crash(DistributedShards s)
    {
        foreach (var proxy in s.Proxies)
        {
            proxy.Cut();
        }

        foreach (var proxy in s.Proxies)
        {
            proxy.Restore();
        }

        // A dead process takes its pool with it; here the idle pooled connections were reset too and must not be reused.
        foreach (var name in s.Names)
        {
            s.Source.GetShardDataSource(name).Clear();
        }
    }
}

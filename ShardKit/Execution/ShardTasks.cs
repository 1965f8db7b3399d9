namespace ShardKit;

/// <summary>Awaits one task per shard and turns failures into a <see cref="ShardAggregateException"/> naming each shard.</summary>
internal static class ShardTasks
{
    /// <summary>
    /// Awaits every task; on failure names each failed shard and, when <paramref name="affectedRows"/> is given (a
    /// write), what the statement did on each shard that succeeded.
    /// </summary>
    public static async Task<T[]> WhenAllAsync<T>(Task<T>[] tasks, string[] shardNames, Func<T, int>? affectedRows = null)
    {
        try
        {
            return await Task.WhenAll(tasks).ConfigureAwait(false);
        }
        catch (Exception) when (tasks.Any(t => t.IsFaulted))
        {
            var failures = new List<ShardFailure>();
            for (var i = 0; i < tasks.Length; i++)
            {
                if (tasks[i].IsFaulted)
                {
                    failures.Add(new ShardFailure(shardNames[i], tasks[i].Exception!.InnerException ?? tasks[i].Exception!));
                }
            }

            throw Failed(failures, affectedRows is null ? null : Succeeded(tasks.Select(t => t.IsCompletedSuccessfully
                ? (true, t.Result) : (false, default!)).ToArray(), shardNames, affectedRows));
        }
    }

    /// <summary>The rows each successful shard's write affected, by shard name.</summary>
    public static Dictionary<string, int> Succeeded<T>((bool Ok, T Result)[] results, string[] shardNames, Func<T, int> affectedRows)
    {
        var applied = new Dictionary<string, int>();
        for (var i = 0; i < results.Length; i++)
        {
            if (results[i].Ok)
            {
                applied[shardNames[i]] = affectedRows(results[i].Result);
            }
        }

        return applied;
    }

    /// <summary>
    /// The error of a split command: for a write (<paramref name="applied"/> given) a <see cref="BroadcastWriteException"/>
    /// saying where the statement applied, where the server refused it, and where the answer was lost.
    /// </summary>
    public static ShardAggregateException Failed(IReadOnlyList<ShardFailure> failures, IReadOnlyDictionary<string, int>? applied)
    {
        if (applied is null)
        {
            return new ShardAggregateException(failures);
        }

        var refused = failures.Where(f => ShardErrors.AnsweredByServer(f.Error)).Select(f => f.Shard).ToList();
        var inDoubt = failures.Select(f => f.Shard).Except(refused).ToList();
        return BroadcastWriteException.Create("Execute", failures, applied, refused, inDoubt, committed: false, atomic: true);
    }
}

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

    public static ShardAggregateException Failed(IReadOnlyList<ShardFailure> failures, IReadOnlyDictionary<string, int>? applied) =>
        applied is null ? new ShardAggregateException(failures) : new ShardAggregateException(failures, applied);
}

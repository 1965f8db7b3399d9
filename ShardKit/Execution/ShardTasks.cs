namespace ShardKit;

/// <summary>Awaits one task per shard and turns failures into a <see cref="ShardAggregateException"/> naming each shard.</summary>
internal static class ShardTasks
{
    public static async Task<T[]> WhenAllAsync<T>(Task<T>[] tasks, string[] shardNames)
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

            throw new ShardAggregateException(failures);
        }
    }
}

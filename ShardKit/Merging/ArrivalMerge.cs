using System.Runtime.CompilerServices;

namespace ShardKit;

/// <summary>
/// Concatenates the shards' rows in the order they arrive: whichever shard has a row ready is read next, so a slow
/// shard never holds back the others (and a first match can stop the rest early).
/// </summary>
internal static class ArrivalMerge
{
    public static async IAsyncEnumerable<ShardRow<T>> MergeAsync<T>(MergeSource<T>[] sources,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var pending = new Task<bool>?[sources.Length];
        for (var i = 0; i < sources.Length; i++)
        {
            pending[i] = sources[i].AdvanceAsync().AsTask();
        }

        var active = sources.Length;
        var next = 0;
        while (active > 0)
        {
            var ready = NextReady(pending, next);
            if (ready < 0)
            {
                await Task.WhenAny(pending.Where(t => t is not null)!).WaitAsync(cancellationToken).ConfigureAwait(false);
                continue;
            }

            // Round robin among ready shards, so one fast shard does not starve the others' buffers.
            next = (ready + 1) % sources.Length;
            if (!await pending[ready]!.ConfigureAwait(false))
            {
                pending[ready] = null;
                active--;
                continue;
            }

            var source = sources[ready];
            yield return new ShardRow<T>(source.Shard, source.Rows.Current);
            pending[ready] = source.AdvanceAsync().AsTask();
        }
    }

    private static int NextReady(Task<bool>?[] pending, int start)
    {
        for (var n = 0; n < pending.Length; n++)
        {
            var i = (start + n) % pending.Length;
            if (pending[i] is { IsCompleted: true })
            {
                return i;
            }
        }

        return -1;
    }
}

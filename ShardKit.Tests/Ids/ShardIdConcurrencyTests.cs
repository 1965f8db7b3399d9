
namespace ShardKit.Tests.Ids;

/// <summary>Several processes, each with its own data source and leased worker, making ids at once on the real clock.</summary>
public sealed class ShardIdConcurrencyTests
{
    private const int Processes = 4;
    private const int ThreadsPerProcess = 2;
    private const int IdsPerThread = 125_000;

    [Test]
    public async Task A_million_ids_from_four_processes_at_once_are_unique_positive_and_carry_their_keys_bucket()
    {
        await using var ctx = await IdShards.WithWorkerTableAsync();
        var sources = Enumerable.Range(0, Processes).Select(_ => IdShards.AnotherProcess(ctx)).ToList();
        var generators = await Task.WhenAll(sources.Select(s => ShardIdGenerator.CreateAsync(s, IdShards.Options(ctx))));
        var ids = new long[Processes * ThreadsPerProcess][];
        var keys = new long[ids.Length][];
        try
        {
            Parallel.For(0, ids.Length, new ParallelOptions { MaxDegreeOfParallelism = ids.Length }, t =>
            {
                var generator = generators[t / ThreadsPerProcess];
                var random = new Random(t);
                var (mine, myKeys) = (ids[t] = new long[IdsPerThread], keys[t] = new long[IdsPerThread]);
                for (var i = 0; i < IdsPerThread; i++)
                {
                    // A few hot keys among many cold ones, so buckets also fill their milliseconds and run ahead.
                    myKeys[i] = i % 4 == 0 ? i % 3 : random.NextInt64();
                    mine[i] = generator.NextId(myKeys[i]);
                }
            });

            var all = ids.SelectMany(x => x).ToArray();
            Assert.That(all, Has.Length.EqualTo(1_000_000));
            Assert.That(all.Distinct().Count(), Is.EqualTo(all.Length), "no duplicates");
            Assert.That(all.Min(), Is.Positive);
            Assert.That(generators.Select(g => g.Worker).Distinct().Count(), Is.EqualTo(Processes), "one worker per process");

            var map = ctx.Source.Map;
            var wrong = 0;
            for (var t = 0; t < ids.Length; t++)
            {
                var worker = generators[t / ThreadsPerProcess].Worker;
                for (var i = 0; i < IdsPerThread; i++)
                {
                    var parts = ShardId.Decode(ids[t][i]);
                    wrong += parts.Bucket == map.BucketOf(keys[t][i]) && parts.Worker == worker ? 0 : 1;
                }
            }

            Assert.That(wrong, Is.Zero, "ids whose bucket or worker is not their key's and generator's");
        }
        finally
        {
            foreach (var generator in generators)
            {
                await generator.DisposeAsync();
            }

            foreach (var source in sources)
            {
                await source.DisposeAsync();
            }
        }
    }
}

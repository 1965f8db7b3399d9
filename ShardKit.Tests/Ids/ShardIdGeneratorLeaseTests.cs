using Microsoft.Extensions.Time.Testing;

namespace ShardKit.Tests.Ids;

/// <summary>Worker leases in a real worker table, on clocks the tests move by hand.</summary>
public sealed class ShardIdGeneratorLeaseTests
{
    private static readonly DateTimeOffset T0 = new(2026, 3, 1, 9, 0, 0, TimeSpan.Zero);

    [Test]
    public async Task Generators_lease_distinct_workers_and_a_33rd_is_refused_with_advice()
    {
        var clock = new ManualClock(T0);
        await using var ctx = await IdShards.WithWorkerTableAsync(clock);
        var generators = new List<ShardIdGenerator>();
        try
        {
            for (var i = 0; i < ShardId.WorkerCount; i++)
            {
                generators.Add(await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx)));
            }

            Assert.That(generators.Select(g => g.Worker).Order(), Is.EqualTo(Enumerable.Range(0, 32)));
            var error = Assert.ThrowsAsync<ShardIdLeaseException>(() => ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx)));
            Assert.That(error!.Message, Does.StartWith($"All 32 worker numbers in {ctx.Table} on shard 's0' are leased")
                .And.Contain("one generator per process").And.Contain("10 s after their last renewal"));
        }
        finally
        {
            foreach (var generator in generators)
            {
                await generator.DisposeAsync();
            }
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public async Task Disposing_frees_the_worker_at_once_and_its_next_holder_stamps_after_every_id_it_made(bool async)
    {
        var clock = new ManualClock(T0);
        await using var ctx = await IdShards.WithWorkerTableAsync(clock);
        var others = new List<ShardIdGenerator>();
        var first = await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx));
        for (var i = 1; i < ShardId.WorkerCount; i++)
        {
            others.Add(await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx)));
        }

        // 100 ids of one bucket on a still clock run 6 ms ahead of it.
        var before = Enumerable.Range(0, 100).Select(_ => first.NextIdForBucket(5)).ToList();
        if (async)
        {
            await first.DisposeAsync();
        }
        else
        {
            first.Dispose();
        }

        Assert.Throws<ObjectDisposedException>(() => first.NextIdForBucket(5), "a disposed generator makes no ids");

        await using var next = await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx));
        var after = next.NextIdForBucket(5);

        Assert.That(next.Worker, Is.EqualTo(first.Worker), "the only free worker");
        Assert.That(ShardId.Decode(after).Timestamp, Is.EqualTo(ShardId.Decode(before[^1]).Timestamp.AddMilliseconds(1)));
        Assert.That(before, Has.All.LessThan(after));
        foreach (var generator in others)
        {
            await generator.DisposeAsync();
        }
    }

    [Test]
    public async Task A_lease_that_ran_out_stops_ids_until_it_is_renewed()
    {
        var clock = new ManualClock(T0);
        await using var ctx = await IdShards.WithWorkerTableAsync(clock);
        await using var generator = await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx));
        Assert.That(generator.LeaseExpiresAt, Is.EqualTo(T0.AddSeconds(10)));

        clock.Now = T0.AddSeconds(10).AddMilliseconds(1);
        var error = Assert.Throws<ShardIdLeaseException>(() => generator.NextId(42L));
        Assert.That(error!.Message, Does.Contain($"Worker {generator.Worker}'s lease ended at 2026-03-01T09:00:10.0000000+00:00")
            .And.Contain("ids resume when RenewLeaseAsync succeeds"));

        await generator.RenewLeaseAsync();

        Assert.That(generator.LeaseExpiresAt, Is.EqualTo(clock.Now.AddSeconds(10)));
        Assert.That(ShardId.Decode(generator.NextId(42L)).Timestamp, Is.EqualTo(clock.Now));
    }

    [Test]
    public async Task An_expired_lease_is_taken_over_only_after_it_ends_and_its_old_holder_stops_at_that_end()
    {
        var clockA = new ManualClock(T0);
        await using var ctx = await IdShards.WithWorkerTableAsync(clockA);
        var a = await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx));
        clockA.Now = T0.AddMilliseconds(1); // every other lease ends after a's
        var others = new List<ShardIdGenerator>();
        for (var i = 1; i < ShardId.WorkerCount; i++)
        {
            others.Add(await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx)));
        }

        var clockB = new ManualClock(T0.AddSeconds(5));
        await using var processB = IdShards.AnotherProcess(ctx, clockB);
        Assert.ThrowsAsync<ShardIdLeaseException>(() => ShardIdGenerator.CreateAsync(processB, IdShards.Options(ctx)), "a's lease still runs");

        clockB.Now = T0.AddSeconds(10).AddMilliseconds(1);
        await using var b = await ShardIdGenerator.CreateAsync(processB, IdShards.Options(ctx));
        Assert.That(b.Worker, Is.EqualTo(a.Worker));

        var lost = Assert.ThrowsAsync<ShardIdLeaseException>(() => a.RenewLeaseAsync());
        Assert.That(lost!.Message, Does.Contain($"Worker {a.Worker} was taken over by another process").And.Contain("create a new one"));

        // a, whose clock is behind, still stamps up to its lease end, all before b's ids; past it, nothing.
        clockA.Now = T0.AddSeconds(10);
        var fromA = Enumerable.Range(0, 16).Select(_ => a.NextIdForBucket(3)).ToList();
        Assert.Throws<ShardIdLeaseException>(() => a.NextIdForBucket(3));
        var fromB = Enumerable.Range(0, 16).Select(_ => b.NextIdForBucket(3)).ToList();
        Assert.That(fromA.Max(), Is.LessThan(fromB.Min()));
        Assert.That(fromA.Concat(fromB).Select(id => ShardId.Decode(id).Worker), Is.All.EqualTo(a.Worker));

        foreach (var generator in others.Append(a))
        {
            await generator.DisposeAsync();
        }
    }

    [Test]
    public async Task The_background_timer_renews_the_lease_so_ids_continue_past_the_first_lease_end()
    {
        var clock = new FakeTimeProvider(T0);
        await using var ctx = await IdShards.WithWorkerTableAsync(clock);
        await using var generator = await ShardIdGenerator.CreateAsync(ctx.Source, IdShards.Options(ctx));

        for (var step = 1; step <= 4; step++)
        {
            clock.Advance(TimeSpan.FromSeconds(3));
            await generator.BackgroundRenewal;
            Assert.That(generator.LeaseExpiresAt, Is.EqualTo(T0.AddSeconds(3 * step + 10)), $"after renewal {step}");
        }

        Assert.That(ShardId.Decode(generator.NextId("acme")).Timestamp, Is.EqualTo(T0.AddSeconds(12)));
    }

    [Test]
    public void Invalid_options_are_all_reported_before_any_database_is_touched()
    {
        using var source = new ShardedDataSourceBuilder().AddShard("s0", "Host=127.0.0.1;Port=1").Build();
        var options = new ShardIdGeneratorOptions
        {
            WorkerTable = "workers; drop table x",
            LeaseDuration = TimeSpan.FromSeconds(10),
            RenewInterval = TimeSpan.FromSeconds(10),
            MaxRunAhead = TimeSpan.FromSeconds(2),
            MaxClockStepBack = TimeSpan.FromSeconds(1),
        };

        var error = Assert.ThrowsAsync<ShardConfigurationException>(() => ShardIdGenerator.CreateAsync(source, options));

        Assert.That(error!.Errors, Has.Count.EqualTo(3));
        Assert.That(error.Errors, Has.Some.StartsWith("WorkerTable 'workers; drop table x' is not a plain table name")
            .And.Some.StartsWith("RenewInterval is 00:00:10; use more than zero and less than LeaseDuration")
            .And.Some.StartsWith("MaxClockStepBack is 00:00:01; use more than MaxRunAhead"));
    }
}

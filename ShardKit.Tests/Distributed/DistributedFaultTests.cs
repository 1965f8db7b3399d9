using System.Globalization;
using ShardKit.Tests.Harness;
using Row = ShardKit.Tests.Distributed.DistributedShards.Row;

namespace ShardKit.Tests.Distributed;

/// <summary>
/// Randomized fault injection on a cluster of this fixture's own: at a random step of a two-phase commit a shard's
/// connections are cut, a server is stopped hard, or the application "crashes". After recovery every trial must be
/// all-or-nothing, and must agree with what the commit reported (committed: all; rolled back: nothing).
/// Set SHARDKIT_2PC_SEED to replay a run; the seed is printed.
/// </summary>
public sealed class DistributedFaultTests
{
    private const int ServerCount = 3;
    private const int Coordinator = 0;
    private static readonly string[] Names = ["f0", "f1", "f2"];
    private static readonly DistributedStep[] Steps =
    [
        DistributedStep.BeforePrepare, DistributedStep.PrepareShard, DistributedStep.BeforeDecision,
        DistributedStep.AfterDecision, DistributedStep.CommitPreparedShard,
    ];

    private LocalPostgresCluster? _cluster;
    private DelayProxy[] _proxies = [];
    private int _nextId;

    private enum Fault
    {
        Cut,
        Crash,
        Stop,
    }

    private enum Reported
    {
        Committed,
        RolledBack,
        Unknown,
    }

    private IReadOnlyList<string> Direct => _cluster!.ConnectionStrings;

    [OneTimeSetUp]
    public async Task StartCluster()
    {
        _cluster = await DedicatedCluster.StartAsync(ServerCount);
        _proxies = Direct.Select(cs => DelayProxy.Start(cs, TimeSpan.Zero)).ToArray();
        await using var setup = DistributedShards.Create(Direct, Names, "fault_rows", [], ownsResources: false, null);
        await setup.OnEveryShardAsync(string.Format(CultureInfo.InvariantCulture, DistributedShards.Ddl, "fault_rows"));
    }

    [OneTimeTearDown]
    public async Task StopCluster()
    {
        foreach (var proxy in _proxies)
        {
            await proxy.DisposeAsync();
        }

        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }
    }

    [Test]
    public async Task Cut_connections_and_crashes_at_every_step_end_all_or_nothing_after_recovery()
    {
        var seed = Seed();
        var random = new Random(seed);
        var outcomes = new Dictionary<Reported, int>();
        for (var trial = 0; trial < 200; trial++)
        {
            var reported = await RunTrialAsync(random, random.Next(2) == 0 ? Fault.Cut : Fault.Crash, seed);
            outcomes[reported] = outcomes.GetValueOrDefault(reported) + 1;
        }

        TestContext.Out.WriteLine($"seed {seed}: " + string.Join(", ", outcomes.Select(o => $"{o.Key} {o.Value}")));
        Assert.That(outcomes.Keys, Is.SupersetOf(new[] { Reported.Committed, Reported.RolledBack, Reported.Unknown }),
            "the trials reached every kind of outcome");
    }

    [Test]
    public async Task Servers_stopped_hard_at_every_step_end_all_or_nothing_after_restart_and_recovery()
    {
        var seed = Seed();
        var random = new Random(seed);
        var outcomes = new Dictionary<Reported, int>();
        for (var trial = 0; trial < 40; trial++)
        {
            var reported = await RunTrialAsync(random, Fault.Stop, seed);
            outcomes[reported] = outcomes.GetValueOrDefault(reported) + 1;
        }

        TestContext.Out.WriteLine($"seed {seed}: " + string.Join(", ", outcomes.Select(o => $"{o.Key} {o.Value}")));
        Assert.That(outcomes.Keys, Is.SupersetOf(new[] { Reported.Committed, Reported.RolledBack }));
    }

    private static int Seed()
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable("SHARDKIT_2PC_SEED"), NumberStyles.Integer, CultureInfo.InvariantCulture, out var fixedSeed)
            ? fixedSeed
            : Environment.TickCount & int.MaxValue;
        TestContext.Out.WriteLine($"SHARDKIT_2PC_SEED={seed}");
        return seed;
    }

    private async Task<Reported> RunTrialAsync(Random random, Fault fault, int seed)
    {
        var id = Interlocked.Increment(ref _nextId);
        var participants = Enumerable.Range(0, ServerCount).OrderBy(_ => random.Next()).Take(random.Next(2, ServerCount + 1)).Order().ToArray();
        var rowsPerShard = participants.ToDictionary(p => p, _ => random.Next(1, 3));
        var step = Steps[random.Next(Steps.Length)];
        // The coordinator (f0) is never prepared when it takes part: it commits its own part with the decision.
        var prepared = participants.Where(p => p != Coordinator).ToArray();
        var stepShard = step is DistributedStep.PrepareShard or DistributedStep.CommitPreparedShard
            ? Names[prepared[random.Next(prepared.Length)]]
            : null;
        var target = random.Next(ServerCount);
        var restoreEarly = random.Next(2) == 0;
        var what = $"seed {seed}, trial id {id}: {fault} of {Names[target]} at {step}{(stepShard is null ? "" : " on " + stepShard)}" +
                   $"{(fault == Fault.Cut && restoreEarly ? " (restored at once)" : "")}, participants {string.Join(",", participants.Select(p => Names[p]))}";

        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var fired = 0;
        await using var app = DistributedShards.Create(Direct, Names, "fault_rows", _proxies, ownsResources: false, o => o.AbortPreparedAfter = TimeSpan.Zero);
        app.Source.OnDistributedStep = async (at, on) =>
        {
            if (at != step || (stepShard is not null && on != stepShard) || Interlocked.Exchange(ref fired, 1) == 1)
            {
                return;
            }

            reached.TrySetResult();
            switch (fault)
            {
                case Fault.Cut:
                    _proxies[target].Cut();
                    if (restoreEarly)
                    {
                        _proxies[target].Restore();
                    }

                    break;
                case Fault.Stop:
                    await _cluster!.StopAsync(target);
                    break;
                default:
                    await new TaskCompletionSource().Task; // the process froze here and died
                    break;
            }
        };

        var db = app.Source.CreateConnection();
        var tx = await db.BeginDistributedTransactionAsync();
        await db.ExecuteAsync("insert into fault_rows values (@CustomerId, @Id)",
            participants.SelectMany(p => Enumerable.Range(0, rowsPerShard[p]).Select(n => new Row { CustomerId = app.KeyOn(p, n), Id = id })).ToArray());
        var commit = tx.CommitAsync();

        Reported reported;
        if (fault == Fault.Crash)
        {
            await Task.WhenAny(commit, reached.Task);
            Assert.That(reached.Task.IsCompleted, Is.True, () => $"{what}: the commit ended before the step: {commit.Exception?.GetBaseException()}");
            Abandon.Crash(app);
            reported = Reported.Unknown;
        }
        else
        {
            reported = await OutcomeOfAsync(commit, what);
            Assert.That(reached.Task.IsCompleted, Is.True, $"{what}: the step was never reached");
            if (fault == Fault.Stop)
            {
                await _cluster!.RestartAsync(target);
            }
            else
            {
                _proxies[target].Restore();
            }

            await db.DisposeAsync();
        }

        await using var restarted = DistributedShards.Create(Direct, Names, "fault_rows", [], ownsResources: false, o => o.AbortPreparedAfter = TimeSpan.Zero);
        var report = await restarted.Source.RecoverAsync();
        Assert.That(report.IsComplete, Is.True, () => $"{what}: recovery failed on {string.Join(", ", report.Failures.Select(f => f.Shard + ": " + f.Error.Message))}");
        Assert.That(await restarted.PreparedAsync(), Is.Empty, $"{what}: prepared transactions left after recovery");

        var counts = await restarted.CountsAsync($"id = {id}");
        var all = Enumerable.Range(0, ServerCount).All(i => counts[i] == rowsPerShard.GetValueOrDefault(i));
        var none = counts.All(c => c == 0);
        var seen = $"{what}: reported {reported}, rows per shard {string.Join(",", counts)}";
        switch (reported)
        {
            case Reported.Committed:
                Assert.That(all, Is.True, seen);
                break;
            case Reported.RolledBack:
                Assert.That(none, Is.True, seen);
                break;
            default:
                Assert.That(all || none, Is.True, seen);
                break;
        }

        return reported;
    }

    private static async Task<Reported> OutcomeOfAsync(Task<DistributedCommitResult> commit, string what)
    {
        try
        {
            await commit;
            return Reported.Committed;
        }
        catch (ShardAggregateException)
        {
            return Reported.RolledBack;
        }
        catch (DistributedTransactionInDoubtException)
        {
            return Reported.Unknown;
        }
        catch (Exception e)
        {
            Assert.Fail($"{what}: the commit threw {e.GetType().Name}, neither a result, a rollback, nor in doubt: {e}");
            throw;
        }
    }
}

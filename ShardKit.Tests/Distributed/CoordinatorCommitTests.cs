using Dapper;
using Npgsql;
using Row = ShardKit.Tests.Distributed.DistributedShards.Row;

namespace ShardKit.Tests.Distributed;

/// <summary>
/// The coordinator's local commit: when the coordinator shard takes part, its own part commits in the transaction that
/// records the decision, with no prepared transaction there. Recovery may race it, its connection may break in the
/// middle, and its decision log may not exist yet; after each, every shard ends with the same outcome.
/// </summary>
public sealed class CoordinatorCommitTests
{
    private static Func<ShardedConnection, Task> InsertOnEveryShard(DistributedShards s, int id) => db =>
        db.ExecuteAsync($"insert into {s.Table} values (@CustomerId, @Id)",
            Enumerable.Range(0, s.Names.Length).Select(i => new Row { CustomerId = s.KeyOn(i), Id = id }).ToArray());

    [Test]
    public async Task Recovery_that_aborts_first_makes_the_coordinator_roll_back_its_own_part_too()
    {
        await using var s = await DistributedShards.SharedAsync(2, o => o.AbortPreparedAfter = TimeSpan.Zero);
        var (paused, resume) = s.PauseAt(DistributedStep.BeforeDecision);
        await using var db = s.Source.CreateConnection();
        var tx = await db.BeginDistributedTransactionAsync();
        await InsertOnEveryShard(s, 1)(db);
        var pid = await PidAsync(db, s, 0);
        var commit = tx.CommitAsync();
        await paused.Task;

        var report = await s.Source.RecoverAsync();
        resume.SetResult();
        var error = Assert.ThrowsAsync<ShardAggregateException>(() => commit);

        Assert.That(report.RolledBack, Is.EqualTo(1), "recovery wrote its abort before the coordinator's commit");
        Assert.That(error!.FailedShards, Is.EqualTo(new[] { s.Names[0] }));
        Assert.That(error.InnerExceptions.Single().Message, Does.Contain("recovery found it prepared").And.Contain("Nothing was committed"));
        Assert.That(await s.CountsAsync(), Is.All.Zero, "the coordinator's own rows were not committed under an abort decision");
        Assert.That(await s.PreparedAsync(), Is.Empty);
        Assert.That(await s.DecisionsAsync(), Is.EqualTo(new[] { (tx.GlobalId!, "abort") }));
        Assert.That(await s.SessionStateAsync(0, pid), Is.Null.Or.Not.StartWith("idle in transaction"), "the coordinator's session left its failed transaction");
    }

    [Test]
    public async Task Recovery_that_comes_while_the_coordinator_commits_waits_for_its_decision_and_commits_the_rest()
    {
        await using var s = await DistributedShards.SharedAsync(2, o => o.AbortPreparedAfter = TimeSpan.Zero);
        await using var hold = await CommitHold.CreateAsync(s);
        await using var db = s.Source.CreateConnection();
        var tx = await db.BeginDistributedTransactionAsync();
        await InsertOnEveryShard(s, 1)(db);
        var commit = tx.CommitAsync();
        await hold.CoordinatorWaitingAsync(commit); // its decision row is inserted, its COMMIT not done

        var recovery = s.Source.RecoverAsync();
        await hold.DecisionInsertWaitingAsync(recovery);
        Assert.That(recovery.IsCompleted, Is.False, "recovery's abort waits on the coordinator's uncommitted decision");
        await hold.ReleaseAsync();
        var result = await commit;
        var report = await recovery;

        Assert.That(result.UsedTwoPhaseCommit, Is.True);
        Assert.That(report.RolledBack, Is.Zero, "recovery read the coordinator's commit back instead of aborting");
        Assert.That(await s.DecisionsAsync(), Is.EqualTo(new[] { (tx.GlobalId!, "commit") }));
        await s.Source.RecoverAsync(); // finishes a shard the two sides found busy with each other, if any
        Assert.That(await s.CountsAsync(), Is.All.EqualTo(1));
        Assert.That(await s.PreparedAsync(), Is.Empty);
    }

    [TestCase(true, TestName = "A coordinator connection cut during its commit that still commits is in doubt and recovery commits the rest")]
    [TestCase(false, TestName = "A coordinator connection cut during its commit that dies is in doubt and recovery rolls the rest back")]
    public async Task A_coordinator_connection_cut_during_its_commit_is_in_doubt_and_recovery_converges(bool serverCommits)
    {
        await using var s = await DistributedShards.SharedAsync(2, proxied: true);
        await using var hold = await CommitHold.CreateAsync(s);
        await using var db = s.Source.CreateConnection();
        var tx = await db.BeginDistributedTransactionAsync();
        await InsertOnEveryShard(s, 1)(db);
        var commit = tx.CommitAsync();
        var pid = await hold.CoordinatorWaitingAsync(commit);

        if (serverCommits)
        {
            // The client loses the connection while the server still runs the COMMIT: it commits, the answer is lost.
            s.Proxies[0].Cut();
            s.Proxies[0].Restore();
            var doubt = Assert.ThrowsAsync<DistributedTransactionInDoubtException>(() => commit);
            Assert.That(doubt!.GlobalId, Is.EqualTo(tx.GlobalId));
            await hold.ReleaseAsync();
            await hold.BackendGoneAsync(pid);
        }
        else
        {
            await hold.TerminateAsync(pid);
            var doubt = Assert.ThrowsAsync<DistributedTransactionInDoubtException>(() => commit);
            Assert.That(doubt!.Coordinator, Is.EqualTo(s.Names[0]));
        }

        Assert.That(await s.PreparedAsync(), Has.Count.EqualTo(1), "the other shard waits, prepared, for recovery");
        await using var app = DistributedShards.Create(s.Direct, s.Names, s.Table, [], ownsResources: false, o => o.AbortPreparedAfter = TimeSpan.Zero);
        var report = await app.Source.RecoverAsync();

        Assert.That((report.Committed, report.RolledBack), Is.EqualTo(serverCommits ? (1, 0) : (0, 1)));
        Assert.That(await s.CountsAsync(), Is.All.EqualTo(serverCommits ? 1 : 0));
        Assert.That(await s.PreparedAsync(), Is.Empty);
    }

    [Test]
    public async Task A_coordinator_connection_known_lost_before_the_commit_rolls_back_everywhere_and_prepares_nothing()
    {
        await using var s = await DistributedShards.SharedAsync(2, proxied: true);
        var prepares = 0;
        s.Source.OnDistributedStep = (step, _) =>
        {
            if (step == DistributedStep.PrepareShard)
            {
                Interlocked.Increment(ref prepares);
            }

            return Task.CompletedTask;
        };
        await using var db = s.Source.CreateConnection();
        db.Retries = ShardRetryOptions.None;
        await using var tx = await db.BeginDistributedTransactionAsync();
        await InsertOnEveryShard(s, 1)(db);
        s.Proxies[0].Cut();
        s.Proxies[0].Restore();
        Assert.ThrowsAsync(Is.InstanceOf<ShardConnectionException>(), () => db.OnShard(s.Names[0]).ExecuteAsync("select 1"));

        var error = Assert.ThrowsAsync<ShardAggregateException>(() => tx.CommitAsync());

        Assert.That(error!.FailedShards, Is.EqualTo(new[] { s.Names[0] }));
        Assert.That(error.InnerExceptions.Single().Message, Does.Contain("lost inside the distributed transaction").And.Contain("Nothing was committed"));
        Assert.That(prepares, Is.Zero, "the outcome was certain before anything was prepared");
        Assert.That(await s.CountsAsync(), Is.All.Zero);
        Assert.That(await s.PreparedAsync(), Is.Empty);
    }

    [Test]
    public async Task The_first_commit_creates_a_missing_decision_log_and_a_log_dropped_later_fails_one_commit_cleanly()
    {
        var set = await Shards.GetAsync();
        var databases = new List<(string Admin, string Name)>();
        try
        {
            var connectionStrings = new List<string>();
            foreach (var admin in set.ConnectionStrings.Take(2))
            {
                var name = $"coord_{Guid.NewGuid():N}";
                await ExecuteAsync(admin, $"create database {name}");
                databases.Add((admin, name));
                connectionStrings.Add(new NpgsqlConnectionStringBuilder(admin) { Database = name }.ConnectionString);
            }

            await using var s = DistributedShards.Create(connectionStrings, DistributedShards.UniqueNames(2), "coord_rows", [], ownsResources: false, null);
            await s.OnEveryShardAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, DistributedShards.Ddl, s.Table));
            await using var db = s.Source.CreateConnection();

            await using (var first = await db.BeginDistributedTransactionAsync())
            {
                await InsertOnEveryShard(s, 1)(db);
                var result = await first.CommitAsync();
                Assert.That(await s.DecisionsAsync(), Is.EqualTo(new[] { (result.GlobalId!, "commit") }), "the log was created before the decision was written in it");
            }

            await ExecuteAsync(connectionStrings[0], "drop table shardkit_2pc_decisions");
            await using (var second = await db.BeginDistributedTransactionAsync())
            {
                await InsertOnEveryShard(s, 2)(db);
                var error = Assert.ThrowsAsync<ShardAggregateException>(() => second.CommitAsync());
                Assert.That(error!.FailedShards, Is.EqualTo(new[] { s.Names[0] }));
                Assert.That(error.InnerExceptions.Single().Message, Does.Contain("could not be written").And.Contain("shardkit_2pc_decisions"));
            }

            Assert.That(await s.CountsAsync("id = 2"), Is.All.Zero);
            Assert.That(await s.PreparedAsync(), Is.Empty);

            await using (var third = await db.BeginDistributedTransactionAsync())
            {
                await InsertOnEveryShard(s, 3)(db);
                await third.CommitAsync();
            }

            Assert.That(await s.CountsAsync("id = 3"), Is.All.EqualTo(1), "the next commit creates the log again");
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            foreach (var (admin, name) in databases)
            {
                await ExecuteAsync(admin, $"drop database if exists {name} with (force)");
            }
        }
    }

    private static Task<int> PidAsync(ShardedConnection db, DistributedShards s, int shard) =>
        db.OnShard(s.Names[shard]).ExecuteScalarAsync<int>("select pg_backend_pid()");

    private static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>
    /// Stops the coordinator inside its COMMIT, after its decision row is inserted: a deferred trigger on the test table
    /// takes an advisory lock the test holds, so the commit waits there until <see cref="ReleaseAsync"/>.
    /// </summary>
    private sealed class CommitHold : IAsyncDisposable
    {
        private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
        private readonly NpgsqlConnection _admin;
        private readonly long _key;
        private readonly string _function;

        private CommitHold(NpgsqlConnection admin, long key, string function)
        {
            _admin = admin;
            _key = key;
            _function = function;
        }

        public static async Task<CommitHold> CreateAsync(DistributedShards s)
        {
            var key = Random.Shared.NextInt64(1, long.MaxValue);
            var admin = new NpgsqlConnection(s.Direct[0] + ";Pooling=false");
            await admin.OpenAsync();
            await admin.ExecuteAsync(
                $"create function {s.Table}_hold() returns trigger language plpgsql as $$ begin perform pg_advisory_xact_lock({key}); return null; end $$; " +
                $"create constraint trigger {s.Table}_hold after insert on {s.Table} deferrable initially deferred " +
                $"for each row execute function {s.Table}_hold()");
            await admin.ExecuteAsync("select pg_advisory_lock(@Key)", new { Key = key });
            return new CommitHold(admin, key, s.Table + "_hold");
        }

        /// <summary>Waits until the coordinator's commit waits on the hold; returns its backend pid.</summary>
        public async Task<int> CoordinatorWaitingAsync(Task commit) => await UntilAsync(commit, async () =>
            await _admin.ExecuteScalarAsync<int?>(
                "select pid from pg_locks where locktype = 'advisory' and not granted and (classid::bigint << 32 | objid::bigint) = @Key",
                new { Key = _key }));

        /// <summary>Waits until an insert into the decision log waits on another transaction's row.</summary>
        public Task DecisionInsertWaitingAsync(Task recovery) => UntilAsync(recovery, async () =>
            await _admin.ExecuteScalarAsync<int?>(
                "select pid from pg_stat_activity where wait_event_type = 'Lock' and query like 'insert into shardkit_2pc_decisions%' " +
                "and datname = current_database() limit 1"));

        public Task ReleaseAsync() => _admin.ExecuteAsync("select pg_advisory_unlock(@Key)", new { Key = _key });

        public Task TerminateAsync(int pid) => _admin.ExecuteAsync("select pg_terminate_backend(@Pid)", new { Pid = pid });

        public Task BackendGoneAsync(int pid) => UntilAsync(Task.Delay(Timeout.Infinite), async () =>
            await _admin.ExecuteScalarAsync<bool>("select not exists (select 1 from pg_stat_activity where pid = @Pid)", new { Pid = pid }) ? pid : null);

        public async ValueTask DisposeAsync()
        {
            await using (_admin)
            {
                await _admin.ExecuteAsync("select pg_advisory_unlock_all()");
                await _admin.ExecuteAsync($"drop function if exists {_function}() cascade"); // with its trigger
            }
        }

        private static async Task<int> UntilAsync(Task mustNotEnd, Func<Task<int?>> probe)
        {
            var deadline = DateTime.UtcNow + Patience;
            while (DateTime.UtcNow < deadline)
            {
                Assert.That(mustNotEnd.IsCompleted, Is.False, () => $"ended before the expected wait: {mustNotEnd.Exception?.GetBaseException()}");
                if (await probe() is { } pid)
                {
                    return pid;
                }

                await Task.Delay(20);
            }

            Assert.Fail($"the expected wait did not happen within {Patience}");
            return 0;
        }
    }
}

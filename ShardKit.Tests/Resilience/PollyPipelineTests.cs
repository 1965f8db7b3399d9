using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Time.Testing;
using Npgsql;
using Polly;
using Polly.Retry;
using ShardKit.Tests.Telemetry;

namespace ShardKit.Tests.Resilience;

/// <summary>
/// Retries run on each shard's Polly.Core pipeline: ShardKit's strategy waits on the data source's clock, and a user's
/// own strategies (UseResilience) replace it while ShardKit still decides which commands may run again.
/// </summary>
public sealed class PollyPipelineTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    // Division by zero: an error ShardKit never retries, so every repeat below is the user's strategy at work. The
    // sequence counts the attempts that reached the shard (a sequence is not rolled back with the failed statement).
    private const string FailingSql = "select nextval('{0}_attempts') / 0";

    [Test]
    public async Task Retry_delays_run_on_the_data_sources_time_provider()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var delay = TimeSpan.FromMinutes(10); // the test would hang on the system clock
        using var capture = new TelemetryCapture();
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint)", b => b
            .UseTimeProvider(time).UseLoggerFactory(capture)
            .UseRetries(new ShardRetryOptions { MaxRetries = 1, BaseDelay = delay, MaxDelay = delay })
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 1000 }), proxied: true);
        await using var db = ctx.Source.CreateConnection();
        ctx.Proxies[1].Cut();

        var read = db.OnShard("s1").ExecuteScalarAsync<int>("select 1");
        await PollAsync(() => capture.Logs.Any(l => l.EventId == 1002)); // the first attempt failed; the retry waits
        ctx.Proxies[1].Restore();
        await Task.Delay(300);
        Assert.That(read.IsCompleted, Is.False, "the retry waits for the fake clock");

        await PollAsync(() =>
        {
            time.Advance(TimeSpan.FromMinutes(1));
            return read.IsCompleted;
        });

        Assert.That(await read, Is.EqualTo(1));
        Assert.That(time.GetUtcNow() - time.Start, Is.GreaterThanOrEqualTo(delay));
        Assert.That(capture.Logs.Single(l => l.EventId == 1002).Message, Does.Contain("retry 1 of 1, in 600000 ms"));
    }

    [Test]
    public async Task A_retry_strategy_built_with_pollys_options_repeats_reads_but_never_a_write_or_a_transactions_command()
    {
        var configured = new ConcurrentBag<string>();
        using var capture = new TelemetryCapture();
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint); create sequence {0}_attempts", b => b
            .UseLoggerFactory(capture)
            .UseResilience((pipeline, shard) =>
            {
                configured.Add(shard);
                pipeline.AddRetry(new RetryStrategyOptions
                {
                    ShouldHandle = new PredicateBuilder().Handle<PostgresException>(e => e.SqlState == PostgresErrorCodes.DivisionByZero),
                    MaxRetryAttempts = 3,
                    Delay = TimeSpan.Zero,
                });
            }));
        await using var db = ctx.Source.CreateConnection();
        var sql = string.Format(System.Globalization.CultureInfo.InvariantCulture, FailingSql, ctx.Table);
        var attempts = async () => (await ctx.DirectAsync<long>("s0", $"select last_value from {ctx.Table}_attempts")).Single();

        Assert.That(configured, Is.EquivalentTo(ctx.Source.ShardNames), "one pipeline per shard, named");
        Assert.ThrowsAsync<PostgresException>(() => db.OnShard("s0").ExecuteScalarAsync<long>(sql));
        Assert.That(await attempts(), Is.EqualTo(4), "a read: the first attempt and the strategy's three retries");

        Assert.ThrowsAsync<PostgresException>(() => db.OnShard("s0").ExecuteAsync(sql));
        Assert.That(await attempts(), Is.EqualTo(5), () => "a write runs once unless RetryWrites says it is safe twice; logs: " +
            string.Join(" | ", capture.Logs.Select(l => l.EventId + ": " + l.Message)));

        await using (var tx = await db.OnShard("s0").BeginTransactionAsync())
        {
            Assert.ThrowsAsync<PostgresException>(() => db.OnShard("s0").ExecuteScalarAsync<long>(sql));
            Assert.That(await attempts(), Is.EqualTo(6), "nothing is repeated inside a transaction");
        }

        db.Retries = db.Retries with { RetryWrites = true };
        Assert.ThrowsAsync<PostgresException>(() => db.OnShard("s0").ExecuteAsync(sql));
        Assert.That(await attempts(), Is.EqualTo(10), "a write the caller marked idempotent is the strategy's too");

        db.Retries = ShardRetryOptions.None;
        Assert.ThrowsAsync<PostgresException>(() => db.OnShard("s0").ExecuteScalarAsync<long>(sql));
        Assert.That(await attempts(), Is.EqualTo(11), "no retries for a connection that turned them off");
    }

    [Test]
    public void A_synchronous_read_runs_the_users_strategy_synchronously()
    {
        ShardTestContext? ctx = null;
        try
        {
            ctx = ShardTestContext.CreateAsync("create table {0} (id bigint); create sequence {0}_attempts", b => b
                .UseResilience((pipeline, _) => pipeline.AddRetry(new RetryStrategyOptions
                {
                    ShouldHandle = new PredicateBuilder().Handle<PostgresException>(),
                    MaxRetryAttempts = 2,
                    Delay = TimeSpan.Zero,
                }))).GetAwaiter().GetResult();
            using var db = ctx.Source.CreateConnection();
            var sql = string.Format(System.Globalization.CultureInfo.InvariantCulture, FailingSql, ctx.Table);

            Assert.Throws<PostgresException>(() => db.OnShard("s2").ExecuteScalar<long>(sql));

            var attempts = ctx.DirectAsync<long>("s2", $"select last_value from {ctx.Table}_attempts").GetAwaiter().GetResult();
            Assert.That(attempts.Single(), Is.EqualTo(3));
        }
        finally
        {
            ctx?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    [Test]
    public async Task A_users_strategy_whose_retries_open_the_breaker_reports_the_connection_failure()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint)", b => b
            .UseResilience((pipeline, _) => pipeline.AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<Exception>(), // retries the breaker's refusals too
                MaxRetryAttempts = 4,
                Delay = TimeSpan.FromMilliseconds(10),
            }))
            .UseCircuitBreaker(new CircuitBreakerOptions { FailureThreshold = 2, ProbeInterval = TimeSpan.Zero }), proxied: true);
        await using var db = ctx.Source.CreateConnection();
        ctx.Proxies[3].Cut();

        var error = Assert.ThrowsAsync<ShardConnectionException>(() => db.OnShard("s3").ExecuteScalarAsync<int>("select 1"));

        Assert.That(error!.Shard, Is.EqualTo("s3"));
        Assert.That(ctx.Source.GetCircuitState("s3"), Is.EqualTo(CircuitState.Open), "two failed attempts opened the breaker");
        Assert.ThrowsAsync<ShardUnavailableException>(() => db.OnShard("s3").ExecuteScalarAsync<int>("select 1"),
            "a new command is refused at once");
    }

    [Test]
    public void Resilience_configuration_and_classification_reject_null()
    {
        Assert.Throws<ArgumentNullException>(() => new ShardedDataSourceBuilder().UseResilience(null!));
        Assert.Throws<ArgumentNullException>(() => ShardResilience.IsTransient(null!));
    }

    [Test]
    public void Is_transient_matches_what_shardkit_retries()
    {
        Assert.That(ShardResilience.IsTransient(new ShardConnectionException("s0", "connection refused", new IOException())), Is.True);
        Assert.That(ShardResilience.IsTransient(new PostgresException("conflict", "ERROR", "ERROR", PostgresErrorCodes.SerializationFailure)), Is.True);
        Assert.That(ShardResilience.IsTransient(new PostgresException("no table", "ERROR", "ERROR", PostgresErrorCodes.UndefinedTable)), Is.False);
        Assert.That(ShardResilience.IsTransient(new ShardUnavailableException("s0", DateTimeOffset.UtcNow)), Is.False);
        Assert.That(ShardResilience.IsTransient(new NpgsqlException("timeout", new TimeoutException())), Is.False, "a command timeout");
        Assert.That(ShardResilience.IsTransient(new OperationCanceledException()), Is.False);
    }

    // Calls until it is true; fails after a generous while (the machine may be busy).
    private static async Task PollAsync(Func<bool> done)
    {
        var watch = Stopwatch.StartNew();
        while (!done())
        {
            if (watch.Elapsed > Patience)
            {
                Assert.Fail($"Still not done after {Patience.TotalSeconds} s.");
            }

            await Task.Delay(50);
        }
    }
}

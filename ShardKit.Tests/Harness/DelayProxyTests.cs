using System.Diagnostics;
using Npgsql;

namespace ShardKit.Tests.Harness;

public sealed class DelayProxyTests
{
    [Test]
    public async Task Proxy_adds_at_least_its_delay_to_each_round_trip()
    {
        var shards = await Shards.GetAsync();
        var delay = TimeSpan.FromMilliseconds(20);
        await using var proxy = DelayProxy.Start(shards.ConnectionStrings[0], delay);
        await using var conn = new NpgsqlConnection(proxy.Rewrite(shards.ConnectionStrings[0]) + ";Pooling=false");
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("select 1", conn);

        var fastest = TimeSpan.MaxValue;
        for (var i = 0; i < 5; i++)
        {
            var started = Stopwatch.GetTimestamp();
            Assert.That(await cmd.ExecuteScalarAsync(), Is.EqualTo(1));
            var elapsed = Stopwatch.GetElapsedTime(started);
            fastest = elapsed < fastest ? elapsed : fastest;
        }

        // A round trip crosses the proxy twice: request and reply each wait the one-way delay.
        Assert.That(fastest, Is.GreaterThanOrEqualTo(2 * delay));
    }

    [Test]
    public async Task A_cut_shard_raises_a_connection_error_and_answers_again_after_restore()
    {
        var shards = await Shards.GetAsync();
        await using var proxy = DelayProxy.Start(shards.ConnectionStrings[0], TimeSpan.Zero);
        var cs = proxy.Rewrite(shards.ConnectionStrings[0]) + ";Pooling=false;Timeout=5";

        await using var open = new NpgsqlConnection(cs);
        await open.OpenAsync();
        proxy.Cut();

        await using (var cmd = new NpgsqlCommand("select 1", open))
        {
            Assert.That(async () => await cmd.ExecuteScalarAsync(), Throws.InstanceOf<NpgsqlException>(), "open connection is reset");
        }

        await using (var fresh = new NpgsqlConnection(cs))
        {
            Assert.That(async () => await fresh.OpenAsync(), Throws.InstanceOf<NpgsqlException>(), "new connections are refused");
        }

        proxy.Restore();
        await using var again = new NpgsqlConnection(cs);
        await again.OpenAsync();
        await using var ok = new NpgsqlCommand("select 1", again);
        Assert.That(await ok.ExecuteScalarAsync(), Is.EqualTo(1));
    }
}

using System.Diagnostics;
using Npgsql;

namespace ShardKit.Tests.Harness;

public sealed class TestShardsTests
{
    [Test]
    public async Task Shards_are_distinct_servers()
    {
        var shards = await Shards.GetAsync();
        var identities = new List<(string Address, long SystemId)>();
        foreach (var cs in shards.ConnectionStrings)
        {
            await using var conn = new NpgsqlConnection(cs);
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand(
                "select coalesce(inet_server_addr()::text, 'local') || ':' || current_setting('port'), system_identifier from pg_control_system()", conn);
            await using var reader = await cmd.ExecuteReaderAsync();
            Assert.That(await reader.ReadAsync(), Is.True);
            identities.Add((reader.GetString(0), reader.GetInt64(1)));
        }

        Assert.That(shards.Count, Is.GreaterThanOrEqualTo(2));
        Assert.That(identities.Select(i => i.SystemId).Distinct().Count(), Is.EqualTo(shards.Count), "system_identifier");
        if (shards.Source != ShardSource.Environment)
        {
            Assert.That(identities.Select(i => i.Address).Distinct().Count(), Is.EqualTo(shards.Count), "address:port");
        }
    }

    [Test]
    public async Task Shards_allow_prepared_transactions()
    {
        var shards = await Shards.GetAsync();
        await using var conn = new NpgsqlConnection(shards.ConnectionStrings[0]);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("select current_setting('max_prepared_transactions')::int", conn);
        Assert.That((int)(await cmd.ExecuteScalarAsync())!, Is.GreaterThanOrEqualTo(64));
    }

    [Test]
    public async Task A_second_start_in_the_same_process_reuses_the_running_shards()
    {
        var first = await Shards.GetAsync();
        var provisioned = TestShards.ProvisionCount;
        var second = await TestShards.GetAsync();
        Assert.That(second, Is.SameAs(first));
        Assert.That(second.ConnectionStrings, Is.EqualTo(first.ConnectionStrings));
        Assert.That(TestShards.ProvisionCount, Is.EqualTo(provisioned));
    }
}

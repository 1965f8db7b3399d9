using ShardKit.Tests.Harness;

namespace ShardKit.Tests.Distributed;

/// <summary>
/// Servers of a test's own, for trials that stop a server or need unusual settings: the run's shared shards are used
/// by every test in parallel and must never be stopped.
/// </summary>
internal static class DedicatedCluster
{
    public static async Task<LocalPostgresCluster> StartAsync(int count, params string[] settings)
    {
        var binaries = PostgresBinaries.Find();
        if (binaries is null)
        {
            const string why = "These trials start their own PostgreSQL servers and need initdb/pg_ctl (install the PostgreSQL server, or set SHARDKIT_PG_BIN).";
            if (Shards.OnCi)
            {
                Assert.Fail(why);
            }

            Assert.Ignore(why);
        }

        return await LocalPostgresCluster.StartAsync(binaries!, count, settings);
    }
}

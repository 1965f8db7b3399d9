using Npgsql;

namespace ShardKit.Tests.Ids;

/// <summary>Ids made by the shards themselves, for inserts that omit the id.</summary>
public sealed class ShardIdSqlTests
{
    private const int Rows = 400;

    private static IEnumerable<TestCaseData> KeyTypes()
    {
        yield return new TestCaseData("bigint", (Func<Random, object>)(r => r.NextInt64(long.MinValue, long.MaxValue))).SetArgDisplayNames("bigint");
        yield return new TestCaseData("integer", (Func<Random, object>)(r => r.Next(int.MinValue, int.MaxValue))).SetArgDisplayNames("integer");
        yield return new TestCaseData("text", (Func<Random, object>)(r => $"tenant-{r.Next()}-ü€")).SetArgDisplayNames("text");
        yield return new TestCaseData("uuid", (Func<Random, object>)(r => new Guid(r.GetItems<byte>(Enumerable.Range(0, 256).Select(i => (byte)i).ToArray(), 16)))).SetArgDisplayNames("uuid");
    }

    [TestCaseSource(nameof(KeyTypes))]
    public async Task Rows_inserted_without_an_id_get_ShardKits_bucket_of_their_key_and_are_found_again_by_id_alone(string type, Func<Random, object> nextKey)
    {
        await using var ctx = await ShardTestContext.CreateAsync($"create table {{0}} (id bigint primary key, k {type} not null, n int not null)", stem: "ids");
        await ShardIdSql.InstallIdTriggerAsync(ctx.Source, ctx.Table, "id", "k");
        await using var db = ctx.Source.CreateConnection();
        var random = new Random(Rows);
        var inserted = new List<(object Key, long Id)>();
        for (var n = 0; n < Rows; n++)
        {
            var key = nextKey(random);
            var id = await db.ForKey(ShardKeyValue.FromObject(key)).ExecuteScalarAsync<long>(
                $"insert into {ctx.Table} (k, n) values (@key, @n) returning id", new { key, n });
            inserted.Add((key, id));
        }

        Assert.That(inserted.Select(r => ShardId.BucketOf(r.Id)), Is.EqualTo(inserted.Select(r => ctx.Source.Map.BucketOf(ShardKeyValue.FromObject(r.Key)))));
        Assert.That(inserted.Select(r => ShardId.Decode(r.Id).Source), Is.All.EqualTo(ShardIdSource.Database));
        Assert.That(inserted.Select(r => r.Id).Distinct().Count(), Is.EqualTo(Rows));
        for (var n = 0; n < Rows; n++)
        {
            var found = await db.ForId(inserted[n].Id).QuerySingleOrDefaultAsync<int?>($"select n from {ctx.Table} where id = @id", new { id = inserted[n].Id });
            Assert.That(found, Is.EqualTo(n), $"row {n} found through ForId");
        }
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(1000)]
    [TestCase(1024)]
    [TestCase(4096)]
    public async Task The_server_cuts_the_hash_space_exactly_as_ShardKit_at_every_bucket_edge(int buckets)
    {
        await using var ctx = await ShardTestContext.CreateAsync("select '{0}'", stem: "ide");
        await ShardIdSql.InstallAsync(ctx.Source);
        var edges = Enumerable.Range(0, buckets).SelectMany(b => BucketMath.HashRangeOf(b, buckets) is var (low, high) ? new[] { low, high } : []).ToArray();

        await using var connection = await ctx.Source.GetShardDataSource("s0").OpenConnectionAsync();
        var server = (await Dapper.SqlMapper.QueryAsync<int>(connection, "select shardkit_bucket(h, @buckets) from unnest(@edges) with ordinality u(h, n) order by n",
            new { edges, buckets })).ToArray();

        Assert.That(server, Is.EqualTo(edges.Select(h => BucketMath.BucketOf(h, buckets))));
        Assert.That(server, Is.EqualTo(Enumerable.Range(0, buckets).SelectMany(b => new[] { b, b })), "low and high of each bucket");
    }

    [Test]
    public async Task With_modulo_sharding_each_shard_stamps_its_own_index_and_an_explicit_id_is_kept()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint primary key, k bigint not null)", b => b.UseModuloSharding(), stem: "idm");
        await ShardIdSql.InstallIdTriggerAsync(ctx.Source, ctx.Table, "id", "k");
        await ShardIdSql.InstallIdTriggerAsync(ctx.Source, ctx.Table, "id", "k"); // installing twice is harmless
        await using var db = ctx.Source.CreateConnection();

        for (var key = 0L; key < 12; key++)
        {
            var id = await db.ForKey(key).ExecuteScalarAsync<long>($"insert into {ctx.Table} (k) values (@k) returning id", new { k = key });
            Assert.That(ShardId.BucketOf(id), Is.EqualTo((int)(key % ctx.Shards.Count)));
            Assert.That(await db.ForId(id).ExecuteScalarAsync<long>($"select k from {ctx.Table} where id = @id", new { id }), Is.EqualTo(key));
        }

        var explicitId = await db.ForKey(99L).ExecuteScalarAsync<long>($"insert into {ctx.Table} (id, k) values (12345, @k) returning id", new { k = 99L });
        Assert.That(explicitId, Is.EqualTo(12345));
    }

    [Test]
    public async Task Installing_is_idempotent_even_when_processes_race()
    {
        await using var ctx = await ShardTestContext.CreateAsync("select '{0}'", stem: "idi");
        var sources = Enumerable.Range(0, 3).Select(_ => IdShards.AnotherProcess(ctx)).ToList();

        await Task.WhenAll(sources.Select(s => ShardIdSql.InstallAsync(s)));
        await ShardIdSql.InstallAsync(ctx.Source);

        foreach (var shard in ctx.Shards.Names)
        {
            var id = (await ctx.DirectAsync<long>(shard, "select shardkit_next_id(4095)"))[0];
            Assert.That(ShardId.Decode(id) is { Bucket: 4095, Source: ShardIdSource.Database, Worker: null }, Is.True, $"on {shard}");
        }

        foreach (var source in sources)
        {
            await source.DisposeAsync();
        }
    }

    [Test]
    public async Task The_database_refuses_a_bucket_outside_0_to_4095_and_a_null_key()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint primary key, k text)", stem: "idb");
        await ShardIdSql.InstallIdTriggerAsync(ctx.Source, ctx.Table, "id", "k");

        var bucket = Assert.ThrowsAsync<PostgresException>(() => ctx.DirectAsync<long>("s0", "select shardkit_next_id(4096)"));
        Assert.That((bucket!.SqlState, bucket.MessageText), Is.EqualTo(("22003", "shardkit_next_id: bucket 4096 is outside 0..4095")));

        var nullKey = Assert.ThrowsAsync<PostgresException>(() => ctx.DirectAsync<long>("s0", $"insert into {ctx.Table} (k) values (null) returning id"));
        Assert.That(nullKey!.SqlState, Is.EqualTo("23502"));
        Assert.That(nullKey.MessageText, Does.Contain(".k is null: a ShardKit id needs the shard key"));
    }

    [Test]
    public async Task A_key_column_ShardKit_cannot_hash_a_missing_table_or_an_unsafe_name_is_a_configuration_error()
    {
        await using var ctx = await ShardTestContext.CreateAsync("create table {0} (id bigint primary key, k numeric not null)", stem: "idc");

        var numeric = Assert.ThrowsAsync<ShardConfigurationException>(() => ShardIdSql.InstallIdTriggerAsync(ctx.Source, ctx.Table, "id", "k"));
        Assert.That(numeric!.Message, Does.Contain($"Column {ctx.Table}.k is numeric").And.Contain("ShardIdGenerator"));

        var missing = Assert.ThrowsAsync<ShardConfigurationException>(() => ShardIdSql.InstallIdTriggerAsync(ctx.Source, ctx.Table + "_none", "id", "k"));
        Assert.That(missing!.Message, Does.Contain("Shard 's0' has no column k in table").And.Contain("create the table on every shard"));

        var unsafeName = Assert.ThrowsAsync<ShardConfigurationException>(() => ShardIdSql.InstallIdTriggerAsync(ctx.Source, "t; drop table x", "id", "k"));
        Assert.That(unsafeName!.Message, Does.Contain("table 't; drop table x' is not a plain identifier"));
    }
}

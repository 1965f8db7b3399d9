using Dapper;

namespace ShardKit.Tests;

/// <summary>The README's quick start, compiled and run against real shards (only the shard list differs).</summary>
[NonParallelizable] // it owns the table name "orders" on every shard
public sealed class ReadmeTests
{
    public sealed class Order
    {
        [ShardKey] public long CustomerId { get; init; }
        public long Id { get; init; }
        public decimal Total { get; init; }
    }

    [Test]
    public async Task Quick_start_runs_as_written()
    {
        var set = await Shards.GetAsync();
        DefaultTypeMap.MatchNamesWithUnderscores = true;

        await using var shards = new ShardedDataSourceBuilder()
            .AddShard("s0", set.ConnectionStrings[0])
            .AddShard("s1", set.ConnectionStrings[1])
            .UseHashSharding(buckets: 1024)
            .Build();

        await using var db = shards.CreateConnection();
        await db.AllShards().ExecuteAsync("drop table if exists orders; create table orders (customer_id bigint, id bigint, total numeric)");

        await db.ExecuteAsync("insert into orders (customer_id, id, total) values (@CustomerId, @Id, @Total)",
            new Order { CustomerId = 42, Id = 1, Total = 9.90m });

        var mine = await db.QueryAsync<Order>("select * from orders where customer_id = @CustomerId", new { CustomerId = 42L });

        var some = await db.QueryAsync<Order>("select * from orders where customer_id = any(@CustomerId)",
            new { CustomerId = new[] { 1L, 2L, 42L } });

        var all = await db.AllShards().ExecuteAsync("update orders set total = total * 1.1");

        var plan = Merge.OrderByDescending<Order, long>(o => o.Id).Take(10);
        var newest = await db.AllShards().QueryAsync(
            "select * from orders order by id desc limit @ShardLimit", new { plan.ShardLimit }, plan);
        long count = await db.AllShards().ExecuteScalarAsync("select count(*) from orders", Merge.Count());

        Assert.That(mine.Single().Total, Is.EqualTo(9.90m));
        Assert.That(some.Single().Id, Is.EqualTo(1));
        Assert.That(all.Total, Is.EqualTo(1));
        Assert.That(all.AffectedRows[shards.ShardFor(42L)], Is.EqualTo(1));
        Assert.That(newest.Single().Total, Is.EqualTo(10.89m));
        Assert.That(count, Is.EqualTo(1));
        await db.AllShards().ExecuteAsync("drop table orders");
    }
}

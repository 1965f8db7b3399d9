namespace ShardKit.Tests.Distributed;

public sealed class DistributedTransactionOptionsTests
{
    private static ShardKitOptions TwoShards()
    {
        var options = new ShardKitOptions();
        options.Shards.Add(new ShardOptions { Name = "a", ConnectionString = "Host=localhost" });
        options.Shards.Add(new ShardOptions { Name = "b", ConnectionString = "Host=localhost" });
        return options;
    }

    [Test]
    public void An_unknown_coordinator_and_a_negative_threshold_are_both_reported_by_the_options_validator()
    {
        var options = TwoShards();
        options.DistributedTransactions.CoordinatorShard = "c";
        options.DistributedTransactions.AbortPreparedAfter = TimeSpan.FromSeconds(-1);

        var result = new ShardKitOptionsValidator().Validate(null, options);

        Assert.That(result.Failed, Is.True);
        Assert.That(result.Failures, Has.Some.Contains("coordinator 'c' is not a configured shard; use one of: a, b"));
        Assert.That(result.Failures, Has.Some.Contains("AbortPreparedAfter cannot be negative"));
    }

    [Test]
    public void A_valid_coordinator_passes_and_the_builder_refuses_an_unknown_one()
    {
        var options = TwoShards();
        options.DistributedTransactions.CoordinatorShard = "b";
        Assert.That(new ShardKitOptionsValidator().Validate(null, options).Succeeded, Is.True);

        var error = Assert.Throws<ShardConfigurationException>(() => new ShardedDataSourceBuilder()
            .AddShard("a", "Host=localhost").UseDistributedTransactions(o => o.CoordinatorShard = "z").Build());
        Assert.That(error!.Errors, Has.Some.Contains("'z'"));
    }

    [Test]
    public void Global_ids_name_their_coordinator_and_foreign_ids_are_not_ours()
    {
        var gid = GlobalTransactionId.New("s'0");
        Assert.That(gid, Does.StartWith("shardkit:s'0:"));
        Assert.That(GlobalTransactionId.CoordinatorOf(gid), Is.EqualTo("s'0"));
        Assert.That(GlobalTransactionId.CoordinatorOf("other:s0:" + Guid.NewGuid().ToString("N")), Is.Null);
        Assert.That(GlobalTransactionId.CoordinatorOf("shardkit:s0:short"), Is.Null);
        Assert.That(DistributedTransaction.PreparedSql("commit prepared", gid), Is.EqualTo($"commit prepared '{gid.Replace("'", "''", StringComparison.Ordinal)}'"));
    }
}

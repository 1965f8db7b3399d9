using System.CommandLine;

namespace ShardKit.Tool;

/// <summary>The options every command takes to find its shards.</summary>
internal sealed class ShardOptions
{
    public Option<string[]> Shard { get; } = new("--shard", "-s")
    {
        Description = "A shard as NAME=CONNECTION_STRING; repeat once per shard, in shard order.",
    };

    public Option<string?> Config { get; } = new("--config", "-c")
    {
        Description = "An appsettings.json whose ShardKit section lists the shards (the shape AddShardKit binds).",
    };

    public Option<string> Section { get; } = new("--section")
    {
        Description = "The configuration section with the shards.",
        DefaultValueFactory = _ => ShardKitOptions.SectionName,
    };

    public Option<string?> Catalog { get; } = new("--catalog")
    {
        Description = "The shard that holds the stored map (the catalog); with --config, the section's StoredMap:CatalogShard is used when absent.",
    };

    public Option<int> Buckets { get; } = new("--hash-buckets")
    {
        Description = "With --shard: the number of hash buckets (as the app's UseHashSharding).",
        DefaultValueFactory = _ => 1024,
    };

    public void AddTo(Command command)
    {
        command.Options.Add(Shard);
        command.Options.Add(Config);
        command.Options.Add(Section);
        command.Options.Add(Catalog);
        command.Options.Add(Buckets);
    }

    public ToolShards Open(ParseResult parsed) =>
        ToolShards.Open(parsed.GetValue(Shard) ?? [], parsed.GetValue(Config), parsed.GetValue(Section)!, parsed.GetValue(Catalog),
            parsed.GetValue(Buckets));
}

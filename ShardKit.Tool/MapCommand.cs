using System.CommandLine;
using System.Globalization;
using Npgsql;

namespace ShardKit.Tool;

/// <summary><c>shardkit map show</c>: the shards in order, where each lives (never a password), and the strategy.</summary>
internal static class MapCommand
{
    public static Command Show(ShardOptions shards, TextWriter output)
    {
        var command = new Command("show", "The shards in order (host, port, database) and the placement strategy.");
        shards.AddTo(command);
        command.SetAction(async (parsed, _) =>
        {
            await using var tool = shards.Open(parsed);
            var map = tool.Source.Map;
            output.WriteLine(map.Buckets is { } buckets
                ? string.Create(CultureInfo.InvariantCulture, $"Strategy: {map.StrategyName}, {buckets.Count} buckets") +
                    (map.Epoch > 0 ? string.Create(CultureInfo.InvariantCulture, $", stored map epoch {map.Epoch}") : "")
                : $"Strategy: {map.StrategyName}");
            var table = new TextTable("#", "shard", "host", "port", "database", "buckets");
            for (var i = 0; i < map.ShardNames.Count; i++)
            {
                var name = map.ShardNames[i];
                var where = new NpgsqlConnectionStringBuilder(tool.Source.GetShardDataSource(name).ConnectionString);
                table.Add(i.ToString(CultureInfo.InvariantCulture), name, where.Host ?? "-", where.Port.ToString(CultureInfo.InvariantCulture),
                    where.Database ?? "-", map.Buckets?.BucketsOf(i).Count.ToString(CultureInfo.InvariantCulture) ?? "-");
            }

            table.WriteTo(output);
            return ExitCodes.Ok;
        });
        return command;
    }
}

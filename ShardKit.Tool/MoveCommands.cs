using System.CommandLine;
using System.Diagnostics;
using System.Globalization;

namespace ShardKit.Tool;

/// <summary>
/// Online resharding: <c>map seed</c>, <c>map audit</c>, <c>shard add</c>, and <c>move start|resume|cancel|list</c>,
/// with live progress (rows copied, lag, rate and ETA, the writers' pause per move).
/// </summary>
internal static class MoveCommands
{
    // How fast a move copies; the moving commands (shard add, move start, move resume) take it.
    private static Option<long?> CopyRate() => new("--copy-rows-per-second")
    {
        Description = "Pace the copy to at most this many rows a second (all scans together), leaving the servers' cores to the app; " +
            "by default the copy runs at full speed.",
    };

    private static MoveOptions? OptionsOf(ParseResult parsed, Option<long?> copyRate)
    {
        if (parsed.GetValue(copyRate) is not { } rate)
        {
            return null;
        }

        if (rate < 1)
        {
            throw new UsageException($"--copy-rows-per-second is {rate}; pass at least 1, or leave it out to copy at full speed.");
        }

        return new MoveOptions { CopyRowsPerSecond = rate };
    }

    public static Command Seed(ShardOptions shards, TextWriter output)
    {
        var tables = new Option<string[]>("--table", "-t")
        {
            Description = "A table whose rows move with their buckets, as TABLE:KEY_COLUMN; repeat per table.",
            Required = true,
        };
        var command = new Command("seed", "Store the current map in the catalog (once) and fence every shard for the given tables.") { tables };
        shards.AddTo(command);
        command.SetAction(async (parsed, token) =>
        {
            await using var tool = shards.Open(parsed);
            var list = (parsed.GetValue(tables) ?? []).Select(ParseTable).ToArray();
            var epoch = await tool.Source.Resharding.SeedAsync(list, token);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Stored map at epoch {epoch}; fenced {list.Length} table(s) on {tool.Source.ShardNames.Count} shards."));
            return ExitCodes.Ok;
        });
        return command;
    }

    public static Command Audit(ShardOptions shards, TextWriter output)
    {
        var command = new Command("audit", "Count, on every shard, the rows of buckets it does not own (expect 0).");
        shards.AddTo(command);
        command.SetAction(async (parsed, token) =>
        {
            await using var tool = shards.Open(parsed);
            var audit = await tool.Source.Resharding.AuditPlacementAsync(token);
            var table = new TextTable("shard", "table", "misplaced rows");
            foreach (var row in audit)
            {
                table.Add(row.Shard, row.Table, row.Rows.ToString("N0", CultureInfo.InvariantCulture));
            }

            table.WriteTo(output);
            return audit.Sum(a => a.Rows) == 0 ? ExitCodes.Ok : ExitCodes.Failed;
        });
        return command;
    }

    public static Command AddShard(ShardOptions shards, TextWriter output)
    {
        var name = new Argument<string>("name") { Description = "The new shard (configured already, empty)." };
        var copyRate = CopyRate();
        var command = new Command("add", "Fence a new shard and move an even share of buckets to it, online.") { name, copyRate };
        shards.AddTo(command);
        command.SetAction(async (parsed, token) =>
        {
            await using var tool = shards.Open(parsed);
            var results = await tool.Source.Resharding.AddShardAsync(parsed.GetValue(name)!, OptionsOf(parsed, copyRate), new MovePrinter(output), token);
            WriteResults(output, results);
            return ExitCodes.Ok;
        });
        return command;
    }

    public static Command Start(ShardOptions shards, TextWriter output)
    {
        var buckets = new Option<string>("--buckets", "-b") { Description = "The buckets to move: 1,2,3 or 10-19.", Required = true };
        var to = new Option<string>("--to") { Description = "The target shard.", Required = true };
        var copyRate = CopyRate();
        var command = new Command("start", "Move buckets (all of one source shard) to another shard, online.") { buckets, to, copyRate };
        shards.AddTo(command);
        command.SetAction(async (parsed, token) =>
        {
            await using var tool = shards.Open(parsed);
            var result = await tool.Source.Resharding.MoveBucketsAsync(ParseBuckets(parsed.GetValue(buckets)!), parsed.GetValue(to)!, OptionsOf(parsed, copyRate),
                new MovePrinter(output), token);
            WriteResults(output, [result]);
            return ExitCodes.Ok;
        });
        return command;
    }

    public static Command Resume(ShardOptions shards, TextWriter output)
    {
        var id = new Argument<string>("id") { Description = "The move's id (see 'shardkit move list')." };
        var copyRate = CopyRate();
        var command = new Command("resume", "Take a stopped or crashed move up where the catalog says it is.") { id, copyRate };
        shards.AddTo(command);
        command.SetAction(async (parsed, token) =>
        {
            await using var tool = shards.Open(parsed);
            WriteResults(output, [await tool.Source.Resharding.ResumeMoveAsync(parsed.GetValue(id)!, OptionsOf(parsed, copyRate), new MovePrinter(output), token)]);
            return ExitCodes.Ok;
        });
        return command;
    }

    public static Command Cancel(ShardOptions shards, TextWriter output)
    {
        var id = new Argument<string>("id") { Description = "The move's id (see 'shardkit move list')." };
        var command = new Command("cancel", "Cancel a move that has not switched: drop its slot and publication and the target's copies.") { id };
        shards.AddTo(command);
        command.SetAction(async (parsed, token) =>
        {
            await using var tool = shards.Open(parsed);
            await tool.Source.Resharding.CancelMoveAsync(parsed.GetValue(id)!, token);
            output.WriteLine($"Move {parsed.GetValue(id)} cancelled; the source keeps its buckets and nothing of the move is left.");
            return ExitCodes.Ok;
        });
        return command;
    }

    public static Command List(ShardOptions shards, TextWriter output)
    {
        var command = new Command("list", "Every move the catalog records, with its step and the writers' pause.");
        shards.AddTo(command);
        command.SetAction(async (parsed, token) =>
        {
            await using var tool = shards.Open(parsed);
            var table = new TextTable("id", "buckets", "from", "to", "state", "rows copied", "pause ms", "error");
            foreach (var move in await tool.Source.Resharding.GetMovesAsync(token))
            {
                table.Add(move.MoveId, Buckets(move.Buckets), move.Source, move.Target, move.State.ToString(),
                    move.RowsCopied.ToString("N0", CultureInfo.InvariantCulture),
                    move.PauseMs?.ToString("0.0", CultureInfo.InvariantCulture) ?? "-", move.Error ?? "");
            }

            table.WriteTo(output);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static void WriteResults(TextWriter output, IReadOnlyList<MoveResult> results)
    {
        var table = new TextTable("move", "buckets", "from", "to", "rows", "pause ms", "took s");
        foreach (var r in results)
        {
            table.Add(r.MoveId, Buckets(r.Buckets), r.Source, r.Target, r.RowsCopied.ToString("N0", CultureInfo.InvariantCulture),
                r.Pause.TotalMilliseconds.ToString("0.0", CultureInfo.InvariantCulture), r.Duration.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture));
        }

        table.WriteTo(output);
    }

    private static string Buckets(IReadOnlyList<int> buckets) =>
        buckets.Count <= 6 ? string.Join(",", buckets) : string.Create(CultureInfo.InvariantCulture, $"{buckets[0]}…{buckets[^1]} ({buckets.Count})");

    internal static ShardedTable ParseTable(string text)
    {
        var parts = text.Split(':');
        return parts.Length == 2 && parts[0].Length > 0 && parts[1].Length > 0
            ? new ShardedTable(parts[0], parts[1])
            : throw new UsageException($"--table '{text}' is not TABLE:KEY_COLUMN; write for example --table orders:customer_id.");
    }

    internal static int[] ParseBuckets(string text)
    {
        var buckets = new List<int>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var range = part.Split('-');
            if (range.Length == 1 && int.TryParse(range[0], NumberStyles.None, CultureInfo.InvariantCulture, out var one))
            {
                buckets.Add(one);
            }
            else if (range.Length == 2 && int.TryParse(range[0], NumberStyles.None, CultureInfo.InvariantCulture, out var from)
                     && int.TryParse(range[1], NumberStyles.None, CultureInfo.InvariantCulture, out var to) && from <= to)
            {
                buckets.AddRange(Enumerable.Range(from, to - from + 1));
            }
            else
            {
                throw new UsageException($"--buckets '{text}' is not a list of buckets; write for example --buckets 1,2,3 or --buckets 10-19.");
            }
        }

        return buckets.Count > 0 ? [.. buckets.Distinct()] : throw new UsageException("--buckets names no bucket; write for example --buckets 10-19.");
    }

    /// <summary>One line per step, and at most one per second while rows are copied or changes caught up.</summary>
    private sealed class MovePrinter(TextWriter output) : IProgress<MoveProgress>
    {
        private readonly Lock _gate = new();
        private MoveState? _last;
        private long _printed;

        public void Report(MoveProgress value)
        {
            lock (_gate)
            {
                var now = Stopwatch.GetTimestamp();
                if (value.State == _last && Stopwatch.GetElapsedTime(_printed, now) < TimeSpan.FromSeconds(1))
                {
                    return;
                }

                _last = value.State;
                _printed = now;
                var rate = value.Elapsed.TotalSeconds > 0 ? value.RowsCopied / value.Elapsed.TotalSeconds : 0;
                var eta = value.RowsEstimate > value.RowsCopied && rate > 0
                    ? string.Create(CultureInfo.InvariantCulture, $"  eta {(value.RowsEstimate - value.RowsCopied) / rate:0}s")
                    : "";
                var lag = value.LagBytes >= 0 ? string.Create(CultureInfo.InvariantCulture, $"  lag {value.LagBytes:N0} B") : "";
                var pause = value.Pause is { } p ? string.Create(CultureInfo.InvariantCulture, $"  pause {p.TotalMilliseconds:0.0} ms") : "";
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"[{value.Elapsed.TotalSeconds,7:0.00}s] {value.MoveId} {value.State,-10} rows {value.RowsCopied:N0} ({rate:N0}/s){eta}{lag}{pause}"));
            }
        }
    }
}

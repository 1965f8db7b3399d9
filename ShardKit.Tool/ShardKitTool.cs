using System.CommandLine;

namespace ShardKit.Tool;

/// <summary>
/// The <c>shardkit</c> command: <c>migrations status|apply</c>, <c>map show|seed|audit</c>, <c>move
/// start|resume|cancel|list</c> and <c>shard add</c>. A thin shell over the library (<see cref="ShardMigrator"/>,
/// <see cref="ShardMap"/>, <see cref="ShardResharding"/>); <see cref="RunAsync"/> is the whole program, so tests run it
/// in-process.
/// </summary>
public static class ShardKitTool
{
    /// <summary>Parses <paramref name="args"/>, runs the command, and returns its exit code (<see cref="ExitCodes"/>).</summary>
    /// <param name="args">The command line, without the program name.</param>
    /// <param name="output">Where progress, tables and help go.</param>
    /// <param name="error">Where errors go, one message that says what to do.</param>
    /// <param name="cancellationToken">Stops a run (Ctrl+C does the same when run as a program).</param>
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        var parsed = Root(output).Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var problem in parsed.Errors)
            {
                await error.WriteLineAsync(problem.Message);
            }

            await error.WriteLineAsync("Run 'shardkit --help' (or 'shardkit migrations apply --help') for the commands and their options.");
            return ExitCodes.Usage;
        }

        try
        {
            return await parsed.InvokeAsync(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false }, cancellationToken);
        }
        catch (UsageException e)
        {
            await error.WriteLineAsync(e.Message);
            return ExitCodes.Usage;
        }
        catch (MigrationException e)
        {
            await error.WriteLineAsync("Migration failed: " + e.Message);
            return ExitCodes.Failed;
        }
        catch (ShardMoveException e)
        {
            await error.WriteLineAsync("Move failed: " + e.Message);
            return ExitCodes.Failed;
        }
        catch (Exception e) when (e is ArgumentException or ShardConfigurationException)
        {
            // The library refused what the command asked (buckets outside the map, a table or key column the shards
            // do not have): a usage error with the library's message, not a crash with a stack trace.
            await error.WriteLineAsync(e.Message);
            return ExitCodes.Usage;
        }
        catch (InvalidOperationException e) when (e.Message.Contains("UseStoredMap", StringComparison.Ordinal))
        {
            await error.WriteLineAsync("No stored map: pass --catalog SHARD (the shard that holds the catalog), or set StoredMap:CatalogShard in the configuration.");
            return ExitCodes.Usage;
        }
        catch (OperationCanceledException)
        {
            await error.WriteLineAsync("Cancelled; a transactional script in flight rolled back. Run 'shardkit migrations status' to see where each shard is.");
            return ExitCodes.Failed;
        }
    }

    private static RootCommand Root(TextWriter output)
    {
        var shards = new ShardOptions();
        var migrations = new Command("migrations", "Schema migrations across every shard.")
        {
            MigrationCommands.Status(shards, output),
            MigrationCommands.Apply(shards, output),
        };
        var map = new Command("map", "The shard map: show it, store it in the catalog, audit placement.")
        {
            MapCommand.Show(shards, output),
            MoveCommands.Seed(shards, output),
            MoveCommands.Audit(shards, output),
        };
        var move = new Command("move", "Move hash buckets between shards online.")
        {
            MoveCommands.Start(shards, output),
            MoveCommands.Resume(shards, output),
            MoveCommands.Cancel(shards, output),
            MoveCommands.List(shards, output),
        };
        var shard = new Command("shard", "Grow the shard count.") { MoveCommands.AddShard(shards, output) };
        return new RootCommand("ShardKit operator commands: schema migrations across shards, the shard map, and online resharding.")
        {
            migrations, map, move, shard,
        };
    }
}

using System.CommandLine;
using System.Globalization;

namespace ShardKit.Tool;

/// <summary><c>shardkit migrations status</c> and <c>shardkit migrations apply</c>.</summary>
internal static class MigrationCommands
{
    private static readonly Option<string> Scripts = new("--scripts")
    {
        Description = "The folder of NNNN_name.sql scripts (a script whose first line is '-- shardkit:no-transaction' runs outside a transaction).",
        Required = true,
    };

    private static readonly Option<string?> HistorySchema = new("--history-schema")
    {
        Description = "The schema of the history table (default public).",
    };

    private static readonly Option<string?> HistoryTable = new("--history-table")
    {
        Description = "The history table (default shardkit_migrations).",
    };

    private static readonly Option<string?> Canary = new("--canary")
    {
        Description = "The shard migrated first, alone (default: the first shard).",
    };

    private static readonly Option<bool> NoCanary = new("--no-canary")
    {
        Description = "Start every shard at once instead of the canary first (about half the time; for scripts proven on a copy).",
    };

    private static readonly Option<int> Parallelism = new("--parallelism")
    {
        Description = "How many shards after the canary migrate at once.",
        DefaultValueFactory = _ => new MigrationOptions().MaxParallelism,
    };

    private static readonly Option<double> LockTimeout = new("--lock-timeout")
    {
        Description = "Seconds to wait for another process's migration lock before failing.",
        DefaultValueFactory = _ => new MigrationOptions().LockTimeout.TotalSeconds,
    };

    public static Command Status(ShardOptions shards, TextWriter output)
    {
        var command = new Command("status", "Each shard's applied version, pending scripts and drift. Exit code 0 up to date, 3 drift, 4 pending, 1 a shard unreadable.");
        shards.AddTo(command);
        command.Options.Add(Scripts);
        command.Options.Add(HistorySchema);
        command.Options.Add(HistoryTable);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var migrations = Load(parsed);
            await using var tool = shards.Open(parsed);
            var status = await tool.Source.GetMigrationStatusAsync(migrations, OptionsFrom(parsed), cancellationToken);
            WriteStatus(output, status, migrations, progress: null, result: null);
            return status.UnreadableShards.Count > 0 ? ExitCodes.Failed
                : status.HasDrift ? ExitCodes.Drift
                : status.IsUpToDate ? ExitCodes.Ok
                : ExitCodes.Pending;
        });
        return command;
    }

    public static Command Apply(ShardOptions shards, TextWriter output)
    {
        var command = new Command("apply", "Applies the pending scripts: the canary shard first, then the others in parallel; prints each step and a table per shard.");
        shards.AddTo(command);
        command.Options.Add(Scripts);
        command.Options.Add(HistorySchema);
        command.Options.Add(HistoryTable);
        command.Options.Add(Canary);
        command.Options.Add(NoCanary);
        command.Options.Add(Parallelism);
        command.Options.Add(LockTimeout);
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var migrations = Load(parsed);
            var options = ApplyOptionsFrom(parsed);
            await using var tool = shards.Open(parsed);
            ShardMigrator migrator;
            try
            {
                migrator = tool.Source.CreateMigrator(migrations, options);
            }
            catch (MigrationException e)
            {
                throw new UsageException(e.Message); // the options do not fit the shards (a --canary that is not one)
            }

            var progress = new ProgressPrinter(output);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Migrating {tool.Source.ShardNames.Count} shards with {migrations.Count} scripts from {Path.GetFullPath(parsed.GetValue(Scripts)!)}."));
            MigrationResult? result = null;
            try
            {
                result = await migrator.MigrateAsync(progress, cancellationToken);
            }
            finally
            {
                // The table says where every shard is, after a failure too (the exception follows it).
                if (!cancellationToken.IsCancellationRequested)
                {
                    output.WriteLine();
                    WriteStatus(output, await migrator.GetStatusAsync(CancellationToken.None), migrations, progress, result);
                }
            }

            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Done: {result.AppliedCount} script runs applied; canary {result.CanaryShard ?? "none"}."));
            return ExitCodes.Ok;
        });
        return command;
    }

    private static IReadOnlyList<Migration> Load(ParseResult parsed)
    {
        var folder = parsed.GetValue(Scripts)!;
        if (!Directory.Exists(folder))
        {
            throw new UsageException($"The scripts folder '{Path.GetFullPath(folder)}' does not exist; pass --scripts with the folder of NNNN_name.sql files.");
        }

        try
        {
            var migrations = MigrationScripts.FromFolder(folder);
            return migrations.Count > 0 ? migrations
                : throw new UsageException($"The scripts folder '{Path.GetFullPath(folder)}' has no .sql scripts; name them like 0001_create_orders.sql.");
        }
        catch (MigrationException e)
        {
            throw new UsageException(e.Message);
        }
    }

    // Status takes only where the history lives; apply also how to run.
    private static MigrationOptions OptionsFrom(ParseResult parsed)
    {
        var defaults = new MigrationOptions();
        return new MigrationOptions
        {
            HistorySchema = parsed.GetValue(HistorySchema) ?? defaults.HistorySchema,
            HistoryTable = parsed.GetValue(HistoryTable) ?? defaults.HistoryTable,
        };
    }

    private static MigrationOptions ApplyOptionsFrom(ParseResult parsed)
    {
        if (parsed.GetValue(Parallelism) < 1)
        {
            throw new UsageException($"--parallelism is {parsed.GetValue(Parallelism)}; pass at least 1 (the shard count for the fastest run).");
        }

        if (parsed.GetValue(LockTimeout) < 0)
        {
            throw new UsageException("--lock-timeout is negative; pass the seconds to wait for another run's lock (0 fails at once).");
        }

        var history = OptionsFrom(parsed);
        return new MigrationOptions
        {
            HistorySchema = history.HistorySchema,
            HistoryTable = history.HistoryTable,
            CanaryShard = parsed.GetValue(Canary),
            CanaryFirst = !parsed.GetValue(NoCanary),
            MaxParallelism = parsed.GetValue(Parallelism),
            LockTimeout = TimeSpan.FromSeconds(parsed.GetValue(LockTimeout)),
        };
    }

    private static void WriteStatus(TextWriter output, MigrationStatus status, IReadOnlyList<Migration> migrations, ProgressPrinter? progress,
        MigrationResult? result)
    {
        var table = progress is null ? new TextTable("shard", "version", "pending", "state") : new TextTable("shard", "version", "pending", "applied now", "time", "state");
        foreach (var shard in status.Shards)
        {
            var cells = new List<string> { shard.Shard, shard.AppliedVersion?.ToString(CultureInfo.InvariantCulture) ?? "-", shard.Pending.Count.ToString(CultureInfo.InvariantCulture) };
            if (progress is not null)
            {
                cells.Add(result?.AppliedVersions.TryGetValue(shard.Shard, out var applied) == true
                    ? applied.Count.ToString(CultureInfo.InvariantCulture) : "-");
                cells.Add(progress.TimeByShard.TryGetValue(shard.Shard, out var time)
                    ? string.Create(CultureInfo.InvariantCulture, $"{time.TotalMilliseconds:0} ms") : "-");
            }

            cells.Add(StateOf(shard, progress));
            table.Add([.. cells]);
        }

        table.WriteTo(output);
        var verdict = status.IsUpToDate ? "every shard is up to date."
            : status.UnreadableShards.Count > 0 ? "UNREADABLE: " + string.Join(", ", status.UnreadableShards) + " (check the server and the connection string)."
            : status.HasDrift ? "DRIFT: shards differ or a script changed after it ran."
            : "not up to date.";
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{migrations.Count} scripts known; latest version on any shard: {status.LatestVersion?.ToString(CultureInfo.InvariantCulture) ?? "none"}; {verdict}"));
    }

    private static string StateOf(ShardMigrationStatus shard, ProgressPrinter? progress)
    {
        if (shard.Error is not null)
        {
            return "unreadable: " + shard.Error;
        }

        var notes = new List<string>();
        if (progress is not null && progress.FailedScriptByShard.TryGetValue(shard.Shard, out var failed))
        {
            notes.Add("failed at " + failed);
        }

        if (shard.ChecksumMismatches.Count > 0)
        {
            notes.Add("changed after it ran: " + string.Join(", ", shard.ChecksumMismatches));
        }

        if (shard.IsBehind)
        {
            notes.Add("behind other shards");
        }

        if (shard.Unknown.Count > 0)
        {
            notes.Add("unknown versions (newer release): " + string.Join(", ", shard.Unknown));
        }

        return notes.Count > 0 ? string.Join("; ", notes) : shard.Pending.Count > 0 ? "pending" : "up to date";
    }
}

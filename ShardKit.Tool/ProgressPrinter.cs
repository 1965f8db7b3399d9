using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;

namespace ShardKit.Tool;

/// <summary>
/// Prints each step of a migration run as it happens (shard, script, stage, duration), one line per report, and sums
/// each shard's time for the final table. Reports arrive from several shards at once; lines never interleave.
/// </summary>
internal sealed class ProgressPrinter(TextWriter output) : IProgress<MigrationProgress>
{
    private readonly Lock _gate = new();
    private readonly long _started = Stopwatch.GetTimestamp();

    public ConcurrentDictionary<string, TimeSpan> TimeByShard { get; } = new(StringComparer.Ordinal);

    public ConcurrentDictionary<string, string> FailedScriptByShard { get; } = new(StringComparer.Ordinal);

    public void Report(MigrationProgress value)
    {
        if (value.Stage != MigrationStage.Started)
        {
            TimeByShard.AddOrUpdate(value.Shard, value.Elapsed, (_, sum) => sum + value.Elapsed);
        }

        if (value.Stage == MigrationStage.Failed)
        {
            FailedScriptByShard[value.Shard] = value.Script;
        }

        var at = Stopwatch.GetElapsedTime(_started).TotalSeconds;
        var duration = value.Stage == MigrationStage.Started ? "" : string.Create(CultureInfo.InvariantCulture, $" {value.Elapsed.TotalMilliseconds,8:0} ms");
        var line = string.Create(CultureInfo.InvariantCulture,
            $"[{at,7:0.00}s] {value.Shard,-12} {value.Script,-32} {value.Stage.ToString().ToLowerInvariant(),-8}{duration}{(value.IsCanary ? "  (canary)" : "")}").TrimEnd();
        lock (_gate)
        {
            output.WriteLine(line);
        }
    }
}

using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace ShardKit;

/// <summary>
/// Reports migration drift as a health check: healthy when every shard applied the same scripts with unchanged text,
/// degraded when shards differ, a script changed after it ran, or a shard's history could not be read. Scripts pending on
/// every shard alike are reported in the data but stay healthy. Register with
/// <c>services.AddShardKitMigrationsCheck(migrations)</c> and <c>AddHealthChecks().AddCheck&lt;ShardMigrationHealthCheck&gt;("migrations")</c>.
/// </summary>
public sealed class ShardMigrationHealthCheck(ShardMigrator migrator) : IHealthCheck
{
    /// <inheritdoc />
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var status = await migrator.GetStatusAsync(cancellationToken).ConfigureAwait(false);
        var data = status.Shards.ToDictionary(s => s.Shard, s => (object)(s.Error is not null ? $"unreadable: {s.Error}"
            : $"version {s.AppliedVersion?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none"}, {s.Pending.Count} pending" +
              (s.IsBehind ? ", behind" : "") +
              (s.ChecksumMismatches.Count > 0 ? ", changed after running: " + string.Join(", ", s.ChecksumMismatches) : "")));
        if (status.HasDrift || status.UnreadableShards.Count > 0)
        {
            var why = new List<string>();
            if (status.ShardsBehind.Count > 0)
            {
                why.Add("behind: " + string.Join(", ", status.ShardsBehind));
            }

            if (status.Shards.Any(s => s.ChecksumMismatches.Count > 0))
            {
                why.Add("scripts changed after they ran");
            }

            if (status.UnreadableShards.Count > 0)
            {
                why.Add("unreadable: " + string.Join(", ", status.UnreadableShards));
            }

            return HealthCheckResult.Degraded("Shard schemas drift (" + string.Join("; ", why) + ")", data: data);
        }

        var pending = status.Shards.Max(s => s.Pending.Count);
        return HealthCheckResult.Healthy(pending == 0
            ? $"{status.Shards.Count} shards at version {status.LatestVersion?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none"}"
            : $"{status.Shards.Count} shards agree; {pending} scripts pending on every shard", data);
    }
}

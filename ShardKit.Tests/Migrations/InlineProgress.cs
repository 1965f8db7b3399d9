namespace ShardKit.Tests.Migrations;

/// <summary>Handles each report on the reporting thread, before the run goes on (<see cref="Progress{T}"/> would post it later).</summary>
internal sealed class InlineProgress(Action<MigrationProgress> onReport) : IProgress<MigrationProgress>
{
    public void Report(MigrationProgress value) => onReport(value);
}

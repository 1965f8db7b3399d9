using ShardKit.Tool;

namespace ShardKit.Tests.Tool;

/// <summary>One in-process run of the <c>shardkit</c> command: its exit code and what it wrote to each stream.</summary>
internal sealed record ToolRun(int ExitCode, string Output, string Error)
{
    public static async Task<ToolRun> RunAsync(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var code = await ShardKitTool.RunAsync(args, output, error);
        return new ToolRun(code, output.ToString(), error.ToString());
    }

    public override string ToString() => $"exit {ExitCode}\n--- out ---\n{Output}\n--- err ---\n{Error}";
}

using System.Text.RegularExpressions;
using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Tests;

/// <summary>
/// The README's quick start as a new user meets it: the library packed into a local feed, the code block pasted
/// verbatim into a fresh .NET 8 console app that references the package, built, and run twice on real shards; the
/// Generic Host example compiled the same way.
/// </summary>
[NonParallelizable] // the quick start owns the table name "orders" on the first two shards
public sealed class ReadmeTests
{
    private static readonly TimeSpan BuildTimeout = TimeSpan.FromMinutes(8);

    private string? _work;
    private Task<string>? _feed;
    private readonly string _version = $"0.0.0-readme.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";

    [OneTimeTearDown]
    public void RemovePackage()
    {
        if (_work is not null)
        {
            Directory.Delete(_work, recursive: true);
        }

        RemoveFromPackageCache(_version);
    }

    [Test]
    public async Task Quick_start_from_the_packed_package_compiles_and_runs_as_pasted_twice()
    {
        var set = await Shards.GetAsync();
        var root = RepositoryRoot();
        var feed = await PackOnceAsync(root);
        try
        {
            await DropOrdersAsync(set);
            var app = Path.Combine(_work!, "quick-start");
            WriteConsumer(app, "QuickStart", feed, Block(root, "quick-start"), []);
            await DotnetAsync(app, "build", "-c", "Release");

            var environment = new Dictionary<string, string>
            {
                ["SHARD0"] = set.ConnectionStrings[0],
                ["SHARD1"] = set.ConnectionStrings[1],
                ["DOTNET_ROLL_FORWARD"] = "Major", // a machine with only the .NET 10 runtime runs the net8.0 app
            };
            var dll = Path.Combine(app, "bin", "Release", "net8.0", "QuickStart.dll");
            for (var run = 1; run <= 2; run++)
            {
                var (exit, output) = await ProcessRunner.RunAsync("dotnet", [dll], asPostgresUser: false, TimeSpan.FromMinutes(2), environment);
                Assert.That(exit, Is.EqualTo(0), $"run {run} of the quick start failed:\n{output}");
                Assert.That(output, Does.Contain("updated 1 rows"), output);
                Assert.That(output, Does.Contain("1 orders; customer 42 has 1; newest total 10.89"), output);
            }
        }
        finally
        {
            await DropOrdersAsync(set);
        }
    }

    [Test]
    public async Task Generic_host_example_compiles_against_the_packed_package()
    {
        var root = RepositoryRoot();
        var feed = await PackOnceAsync(root);
        var app = Path.Combine(_work!, "host");
        WriteConsumer(app, "HostExample", feed, Block(root, "host-example"), [
            ("Microsoft.Extensions.Hosting", "10.0.15"),
            ("Microsoft.Extensions.Diagnostics.HealthChecks", "10.0.15"),
            ("OpenTelemetry.Extensions.Hosting", "1.21.0"),
        ]);
        await DotnetAsync(app, "build", "-c", "Release");
        Assert.That(File.Exists(Path.Combine(app, "bin", "Release", "net8.0", "HostExample.dll")), Is.True);
    }

    private Task<string> PackOnceAsync(string root)
    {
        lock (this)
        {
            return _feed ??= PackAsync(root);
        }
    }

    private async Task<string> PackAsync(string root)
    {
        _work = Directory.CreateTempSubdirectory("shardkit-readme-").FullName;
        var feed = Path.Combine(_work, "feed");
        await DotnetAsync(root, "pack", Path.Combine(root, "ShardKit", "ShardKit.csproj"), "-c", Configuration, "--no-build",
            "-o", feed, $"-p:PackageVersion={_version}");
        Assert.That(Directory.GetFiles(feed, "*.snupkg"), Is.Not.Empty, "the symbols package");
        return feed;
    }

    [Test]
    public void Package_readme_carries_the_README_quick_start_verbatim()
    {
        var root = RepositoryRoot();
        Assert.That(Block(root, "quick-start", Path.Combine("ShardKit", "PACKAGE.md")), Is.EqualTo(Block(root, "quick-start")));
    }

#if DEBUG
    private const string Configuration = "Debug";
#else
    private const string Configuration = "Release";
#endif

    private static string Block(string root, string name, string file = "README.md")
    {
        var text = File.ReadAllText(Path.Combine(root, file));
        var match = Regex.Match(text, $@"<!-- {name} -->\s*```csharp\n(?<code>.*?)```\s*<!-- /{name} -->", RegexOptions.Singleline);
        Assert.That(match.Success, Is.True, $"{file} has no <!-- {name} --> csharp block");
        return match.Groups["code"].Value;
    }

    private void WriteConsumer(string app, string name, string feed, string program, (string Id, string Version)[] packages)
    {
        Directory.CreateDirectory(app);
        File.WriteAllText(Path.Combine(app, "Program.cs"), program);
        var references = string.Concat(packages.Select(p => $"""<PackageReference Include="{p.Id}" Version="{p.Version}" />"""));
        File.WriteAllText(Path.Combine(app, $"{name}.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net8.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
                <NuGetAudit>false</NuGetAudit>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="ShardKit" Version="{_version}" />
                {references}
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="shardkit-local" value="{feed}" />
              </packageSources>
            </configuration>
            """);
    }

    private static async Task DotnetAsync(string directory, params string[] arguments)
    {
        var environment = new Dictionary<string, string> { ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1", ["DOTNET_NOLOGO"] = "1" };
        var (exit, output) = await ProcessRunner.RunAsync("dotnet", arguments, asPostgresUser: false, BuildTimeout, environment, directory);
        Assert.That(exit, Is.EqualTo(0), $"dotnet {string.Join(' ', arguments)} failed:\n{output}");
    }

    private static async Task DropOrdersAsync(TestShardSet set)
    {
        foreach (var connectionString in set.ConnectionStrings.Take(2))
        {
            await using var connection = new NpgsqlConnection(connectionString);
            await connection.OpenAsync();
            await using var drop = new NpgsqlCommand("drop table if exists orders", connection);
            await drop.ExecuteNonQueryAsync();
        }
    }

    // Each run packs a version of its own, so a cached copy never stands in for the code under test; remove it after.
    private static void RemoveFromPackageCache(string version)
    {
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
                    ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var folder = Path.Combine(cache, "shardkit", version);
        if (Directory.Exists(folder))
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "ShardKit.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("ShardKit.sln not found above the test directory.");
    }
}

using System.Text.RegularExpressions;
using Npgsql;
using ShardKit.Tests.Harness;

namespace ShardKit.Tests;

/// <summary>
/// The README's quick start as a new user meets it: the library packed into a local feed, the code block pasted
/// verbatim into a fresh .NET 8 console app that references the package, built, and run twice on real shards.
/// </summary>
[NonParallelizable] // the quick start owns the table name "orders" on the first two shards
public sealed partial class ReadmeTests
{
    private static readonly TimeSpan BuildTimeout = TimeSpan.FromMinutes(8);

    [Test]
    public async Task Quick_start_from_the_packed_package_compiles_and_runs_as_pasted_twice()
    {
        var set = await Shards.GetAsync();
        var root = RepositoryRoot();
        var work = Directory.CreateTempSubdirectory("shardkit-readme-");
        var version = $"0.0.0-readme.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        try
        {
            await DropOrdersAsync(set);
            var feed = Path.Combine(work.FullName, "feed");
            await DotnetAsync(root, "pack", Path.Combine(root, "ShardKit", "ShardKit.csproj"), "-c", Configuration, "--no-build",
                "-o", feed, $"-p:PackageVersion={version}");
            Assert.That(Directory.GetFiles(feed, "*.snupkg"), Is.Not.Empty, "the symbols package");

            var app = Path.Combine(work.FullName, "app");
            WriteConsumer(app, feed, version, QuickStart(root));
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
            work.Delete(recursive: true);
            RemoveFromPackageCache(version);
        }
    }

    [Test]
    public void Package_readme_carries_the_README_quick_start_verbatim()
    {
        var root = RepositoryRoot();
        var packageReadme = File.ReadAllText(Path.Combine(root, "ShardKit", "PACKAGE.md"));
        var match = QuickStartBlock().Match(packageReadme);
        Assert.That(match.Success, Is.True, "ShardKit/PACKAGE.md has no <!-- quick-start --> csharp block");
        Assert.That(match.Groups["code"].Value, Is.EqualTo(QuickStart(root)));
    }

#if DEBUG
    private const string Configuration = "Debug";
#else
    private const string Configuration = "Release";
#endif

    private static string QuickStart(string root)
    {
        var readme = File.ReadAllText(Path.Combine(root, "README.md"));
        var match = QuickStartBlock().Match(readme);
        Assert.That(match.Success, Is.True, "README.md has no <!-- quick-start --> csharp block");
        return match.Groups["code"].Value;
    }

    private static void WriteConsumer(string app, string feed, string version, string program)
    {
        Directory.CreateDirectory(app);
        File.WriteAllText(Path.Combine(app, "Program.cs"), program);
        File.WriteAllText(Path.Combine(app, "QuickStart.csproj"), $"""
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
                <PackageReference Include="ShardKit" Version="{version}" />
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

    [GeneratedRegex(@"<!-- quick-start -->\s*```csharp\n(?<code>.*?)```\s*<!-- /quick-start -->", RegexOptions.Singleline)]
    private static partial Regex QuickStartBlock();
}

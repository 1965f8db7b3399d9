using System.Text.RegularExpressions;

namespace ShardKit.Tests;

/// <summary>
/// The library's folders depend one way: SQL text → configuration → shared exceptions and their classifier, telemetry → keys → routing → execution → merging, with writes,
/// transactions, ids and migrations on top, the public doors (data source, builder, connection, scopes) above them and
/// dependency injection last. Shared exceptions at the root may be named anywhere; the doors nowhere below them. The
/// check reads every library file's type references (comments and string contents removed).
/// </summary>
public sealed partial class ArchitectureTests
{
    // Lower number = lower layer. A file may name types of its own layer and of lower ones only.
    private static readonly Dictionary<string, int> Layers = new()
    {
        ["Compatibility"] = 0,
        ["Sql"] = 1,
        ["Configuration"] = 2,
        ["Shared"] = 3,
        ["Telemetry"] = 3,
        ["Keys"] = 4,
        ["Routing"] = 5,
        ["Replicas"] = 5,
        ["Execution"] = 6,
        ["Merging"] = 7,
        ["Transactions"] = 8,
        ["Writes"] = 9,
        ["Ids"] = 9,
        ["Resharding"] = 10,
        ["Migrations"] = 10,
        ["Doors"] = 11,
        ["DependencyInjection"] = 12,
    };

    // Public entry points of a top layer that take a door and hand its shard set down at once.
    private static readonly HashSet<(string File, string Type)> Adapters =
    [
        ("Ids/ShardIdGenerator.cs", "ShardedDataSource"),
        ("Ids/ShardIdSql.cs", "ShardedDataSource"),
    ];

    private static readonly string[] DoorFiles = ["ShardedDataSource", "ShardedDataSourceBuilder", "ShardedConnection", "ShardCommandTarget", "FanOutScope", "ShardScope", "ShardGridReader", "ShardResharding"];

    [Test]
    public void Folders_depend_one_way_and_no_folder_names_the_public_doors()
    {
        var files = LibraryFiles();
        var declaredIn = new Dictionary<string, string>();
        foreach (var file in files)
        {
            foreach (Match match in Declaration().Matches(file.Code))
            {
                declaredIn.TryAdd(match.Groups["name"].Value, file.Layer);
            }
        }

        var violations = files.Select(f => f.Layer).Distinct().Where(l => !Layers.ContainsKey(l))
            .Select(l => $"{l}/ is in no layer; add it to ArchitectureTests.Layers").ToList();
        foreach (var file in files.Where(f => Layers.ContainsKey(f.Layer)))
        {
            var declaredHere = Declaration().Matches(file.Code).Select(m => m.Groups["name"].Value).ToHashSet();
            foreach (var name in Identifier().Matches(file.Code).Select(m => m.Value).Distinct())
            {
                if (declaredHere.Contains(name) || !declaredIn.TryGetValue(name, out var layer) || Adapters.Contains((file.Path, name)))
                {
                    continue;
                }

                if (Layers[layer] > Layers[file.Layer])
                {
                    violations.Add($"{file.Path} ({file.Layer}) names {name} ({layer})");
                }
            }
        }

        Assert.That(violations, Is.Empty, "A lower layer names a higher one; move the code or pass what it needs down:\n" +
            string.Join("\n", violations));
    }

    [Test]
    public void The_check_sees_a_violation()
    {
        // The check itself must be able to fail: the routing layer naming the connection is caught.
        var code = Strip("internal static class Probe { static void M(ShardedConnection c) { } }");
        Assert.That(Identifier().Matches(code).Select(m => m.Value), Does.Contain("ShardedConnection"));
        Assert.That(Layers["Doors"], Is.GreaterThan(Layers["Routing"]));
        Assert.That(Strip("// ShardedConnection\nvar s = \"ShardedConnection\";"), Does.Not.Contain("ShardedConnection"));
    }

    private static List<(string Path, string Layer, string Code)> LibraryFiles()
    {
        var library = Path.Combine(RepositoryRoot(), "ShardKit");
        return Directory.EnumerateFiles(library, "*.cs", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(library, f).Replace('\\', '/'))
            .Where(f => !f.StartsWith("bin/", StringComparison.Ordinal) && !f.StartsWith("obj/", StringComparison.Ordinal))
            .Select(f => (f, LayerOf(f), Strip(File.ReadAllText(Path.Combine(library, f)))))
            .ToList();
    }

    private static string LayerOf(string path)
    {
        var slash = path.IndexOf('/', StringComparison.Ordinal);
        if (slash > 0)
        {
            return path[..slash];
        }

        return DoorFiles.Any(d => path.StartsWith(d + ".", StringComparison.Ordinal)) ? "Doors" : "Shared";
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

    private static string Strip(string code)
    {
        code = RawString().Replace(code, "\"\"");
        code = CharLiteral().Replace(code, "' '");
        code = StringLiteral().Replace(code, "\"\"");
        return Comment().Replace(code, "");
    }

    [GeneratedRegex(@"\b(?:class|struct|interface|enum|record)\s+(?<name>[A-Z]\w*)")]
    private static partial Regex Declaration();

    [GeneratedRegex(@"\b[A-Z]\w*\b")]
    private static partial Regex Identifier();

    [GeneratedRegex("\"\"\"[\\s\\S]*?\"\"\"")]
    private static partial Regex RawString();

    [GeneratedRegex(@"'(?:\\.|[^'\\\n])'")]
    private static partial Regex CharLiteral();

    [GeneratedRegex(@"//[^\n]*|/\*[\s\S]*?\*/")]
    private static partial Regex Comment();

    [GeneratedRegex("@\"(?:\"\"|[^\"])*\"|\"(?:\\\\.|[^\"\\\\\\n])*\"")]
    private static partial Regex StringLiteral();
}

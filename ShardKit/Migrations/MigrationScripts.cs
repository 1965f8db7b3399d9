using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;

namespace ShardKit;

/// <summary>
/// Loads migrations named <c>0001_create_orders.sql</c> (version, underscore, name) from a folder or from an assembly's
/// embedded resources, in version order.
/// </summary>
public static partial class MigrationScripts
{
    /// <summary>Reads every <c>*.sql</c> file of <paramref name="folder"/> (not its subfolders).</summary>
    /// <exception cref="MigrationException">
    /// The folder does not exist or cannot be read, a <c>.sql</c> file is not named <c>NNNN_name.sql</c>, or two files
    /// share a version.
    /// </exception>
    public static IReadOnlyList<Migration> FromFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        try
        {
            var files = Directory.GetFiles(folder, "*.sql", SearchOption.TopDirectoryOnly);
            return MigrationList.Ordered(files.Select(file => Parse(Path.GetFileName(file), File.ReadAllText(file))));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new MigrationException(
                $"The migrations folder '{Path.GetFullPath(folder)}' cannot be read ({e.GetType().Name}: {e.Message}). " +
                "Check the path (relative paths start at the process's working directory) and that the files are copied to the output.", e);
        }
    }

    /// <summary>
    /// Reads every embedded resource of <paramref name="assembly"/> whose name ends in <c>NNNN_name.sql</c> and starts with
    /// <paramref name="prefix"/> (for example <c>MyApp.Migrations.</c>; all resources when null). Embed them with
    /// <c>&lt;EmbeddedResource Include="Migrations\*.sql" /&gt;</c>.
    /// </summary>
    /// <exception cref="MigrationException">No resource matches, or two share a version.</exception>
    public static IReadOnlyList<Migration> FromEmbeddedResources(Assembly assembly, string? prefix = null)
    {
        ArgumentNullException.ThrowIfNull(assembly);
        var names = assembly.GetManifestResourceNames()
            .Where(n => (prefix is null || n.StartsWith(prefix, StringComparison.Ordinal)) && n.EndsWith(".sql", StringComparison.OrdinalIgnoreCase))
            .ToArray();
        if (names.Length == 0)
        {
            throw new MigrationException(
                $"Assembly {assembly.GetName().Name} has no embedded .sql resource{(prefix is null ? "" : $" starting with '{prefix}'")}. " +
                "Add <EmbeddedResource Include=\"Migrations\\*.sql\" /> to its project, and check the prefix (RootNamespace.Folder.).");
        }

        return MigrationList.Ordered(names.Select(name =>
        {
            using var stream = assembly.GetManifestResourceStream(name)!;
            using var reader = new StreamReader(stream);
            var fileName = name[(name.LastIndexOf('.', name.Length - ".sql".Length - 1) + 1)..];
            return Parse(fileName, reader.ReadToEnd());
        }));
    }

    private static Migration Parse(string fileName, string sql)
    {
        var match = FileNamePattern().Match(fileName);
        if (!match.Success)
        {
            throw new MigrationException(
                $"Migration script '{fileName}' is not named VERSION_NAME.sql (for example 0001_create_orders.sql); rename it, " +
                "or move files that are not migrations out of the folder.");
        }

        var version = long.Parse(match.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture);
        if (version <= 0)
        {
            throw new MigrationException($"Migration script '{fileName}' has version 0; versions start at 1.");
        }

        if (string.IsNullOrWhiteSpace(sql))
        {
            throw new MigrationException($"Migration script '{fileName}' is empty; write its SQL or remove the file.");
        }

        return new Migration(version, match.Groups[2].Value, sql);
    }

    [GeneratedRegex(@"^(\d{1,18})_([^.]+)\.sql$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex FileNamePattern();
}

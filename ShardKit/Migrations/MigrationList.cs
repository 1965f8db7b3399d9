namespace ShardKit;

/// <summary>Validation of a list of migrations: each version once, in ascending order.</summary>
internal static class MigrationList
{
    /// <exception cref="MigrationException">Two migrations share a version.</exception>
    public static IReadOnlyList<Migration> Ordered(IEnumerable<Migration> migrations)
    {
        ArgumentNullException.ThrowIfNull(migrations);
        var ordered = migrations.Select(m => m ?? throw new ArgumentException("The migration list contains null.", nameof(migrations)))
            .OrderBy(m => m.Version).ToArray();
        for (var i = 1; i < ordered.Length; i++)
        {
            if (ordered[i].Version == ordered[i - 1].Version)
            {
                throw new MigrationException(
                    $"Migrations {ordered[i - 1]} and {ordered[i]} share version {ordered[i].Version}; give each script its own version.")
                {
                    Version = ordered[i].Version,
                    Script = ordered[i].ToString(),
                };
            }
        }

        return ordered;
    }
}

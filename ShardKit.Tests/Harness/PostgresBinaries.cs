namespace ShardKit.Tests.Harness;

/// <summary>Finds the machine's PostgreSQL server programs: on PATH, else under Debian's versioned folders.</summary>
internal sealed record PostgresBinaries(string InitDb, string PgCtl)
{
    public static PostgresBinaries? Find()
    {
        foreach (var folder in CandidateFolders())
        {
            var initdb = Path.Combine(folder, "initdb");
            var pgctl = Path.Combine(folder, "pg_ctl");
            if (File.Exists(initdb) && File.Exists(pgctl))
            {
                return new PostgresBinaries(initdb, pgctl);
            }
        }

        return null;
    }

    private static IEnumerable<string> CandidateFolders()
    {
        var explicitBin = Environment.GetEnvironmentVariable("SHARDKIT_PG_BIN");
        if (!string.IsNullOrWhiteSpace(explicitBin))
        {
            yield return explicitBin;
        }

        foreach (var entry in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            if (entry.Length > 0)
            {
                yield return entry;
            }
        }

        // Debian and Ubuntu keep server binaries off PATH, one folder per major version; prefer the newest.
        const string debianRoot = "/usr/lib/postgresql";
        if (Directory.Exists(debianRoot))
        {
            var versions = Directory.GetDirectories(debianRoot)
                .Select(d => (Dir: d, Major: int.TryParse(Path.GetFileName(d), out var v) ? v : 0))
                .OrderByDescending(x => x.Major);
            foreach (var (dir, _) in versions)
            {
                yield return Path.Combine(dir, "bin");
            }
        }
    }
}

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

    /// <summary>
    /// Another program of the same installation (pg_basebackup): beside pg_ctl, or beside the file a pg_ctl symlink on
    /// PATH points to (Debian links only some programs into /usr/local/bin).
    /// </summary>
    public string Program(string name)
    {
        var linked = new FileInfo(PgCtl).ResolveLinkTarget(returnFinalTarget: true)?.FullName;
        foreach (var folder in new[] { Path.GetDirectoryName(PgCtl), linked is null ? null : Path.GetDirectoryName(linked) })
        {
            if (folder is not null && Path.Combine(folder, name) is var path && File.Exists(path))
            {
                return path;
            }
        }

        return name; // on PATH, or the error names it
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

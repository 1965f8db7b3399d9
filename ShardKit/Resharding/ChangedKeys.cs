namespace ShardKit;

/// <summary>
/// The primary keys of the moved tables' rows a catch-up stream brought changes for while it recorded (inserted,
/// updated, deleted, old and new key, whatever their bucket), per table. A truncate cannot be told by key: it makes the
/// set incomplete.
/// </summary>
internal sealed class ChangedKeys
{
    private readonly Dictionary<string, HashSet<string[]>> _byTable = new(StringComparer.Ordinal);

    /// <summary>False once a change came that names no key (a truncate): only a check of every row can follow it.</summary>
    public bool Complete { get; private set; } = true;

    /// <summary>How many keys were recorded.</summary>
    public int Count
    {
        get
        {
            lock (_byTable)
            {
                return _byTable.Values.Sum(k => k.Count);
            }
        }
    }

    /// <summary>
    /// A copy of the keys recorded so far for a table (its <see cref="MovedTable.QualifiedName"/>), each as the primary
    /// key's values in text; safe to take while the stream records more.
    /// </summary>
    public HashSet<string[]> CopyOf(string qualifiedName)
    {
        lock (_byTable)
        {
            return _byTable.TryGetValue(qualifiedName, out var keys) ? new HashSet<string[]>(keys, KeyComparer.Instance) : new HashSet<string[]>(KeyComparer.Instance);
        }
    }

    public void Add(string qualifiedName, string[] key)
    {
        lock (_byTable)
        {
            if (!_byTable.TryGetValue(qualifiedName, out var keys))
            {
                keys = new HashSet<string[]>(KeyComparer.Instance);
                _byTable[qualifiedName] = keys;
            }

            keys.Add(key);
        }
    }

    public void MarkIncomplete() => Complete = false;

    private sealed class KeyComparer : IEqualityComparer<string[]>
    {
        public static readonly KeyComparer Instance = new();

        public bool Equals(string[]? x, string[]? y) => x is not null && y is not null && x.AsSpan().SequenceEqual(y);

        public int GetHashCode(string[] key)
        {
            var hash = new HashCode();
            foreach (var part in key)
            {
                hash.Add(part, StringComparer.Ordinal);
            }

            return hash.ToHashCode();
        }
    }
}

using System.Globalization;
using System.Text;

namespace ShardKit;

/// <summary>
/// The WAL position of a connection's last write per shard, which a standby must have replayed before it serves that
/// connection's reads of the shard; written and read as a token (<c>rw1.</c> + base64url of <c>shard=position</c> lines)
/// that a web app can keep in a cookie or a job can hand to another process.
/// </summary>
internal sealed class WrittenPositions(ShardMap map)
{
    private const string Prefix = "rw1.";
    private readonly long[] _positions = new long[map.Shards.Count];

    public ulong this[int shard] => (ulong)Volatile.Read(ref _positions[shard]);

    /// <summary>Raises a shard's position (positions only grow; an older one changes nothing).</summary>
    public void Wrote(int shard, ulong position)
    {
        long seen;
        do
        {
            seen = Volatile.Read(ref _positions[shard]);
        }
        while ((ulong)seen < position && Interlocked.CompareExchange(ref _positions[shard], (long)position, seen) != seen);
    }

    public string ToToken()
    {
        var text = new StringBuilder();
        for (var shard = 0; shard < _positions.Length; shard++)
        {
            if (this[shard] is var position && position != 0)
            {
                text.Append(map.ShardNames[shard]).Append('=').Append(position.ToString("X", CultureInfo.InvariantCulture)).Append('\n');
            }
        }

        return Prefix + Convert.ToBase64String(Encoding.UTF8.GetBytes(text.ToString())).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    /// <summary>Raises the positions to those in <paramref name="token"/>; checks all of it before changing anything.</summary>
    public void Resume(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        var parsed = Parse(token);
        foreach (var (shard, position) in parsed)
        {
            Wrote(shard, position);
        }
    }

    private List<(int Shard, ulong Position)> Parse(string token)
    {
        const string Fix = " Pass the string ReadYourWritesToken returned, unchanged, to a data source with the same shards; " +
                           "without one, start with no token (reads may then see a standby that has not caught up).";
        if (!token.StartsWith(Prefix, StringComparison.Ordinal))
        {
            throw new ReadYourWritesTokenException($"This is not a read-your-writes token: it does not start with '{Prefix}'.{Fix}");
        }

        string text;
        try
        {
            var body = token[Prefix.Length..].Replace('-', '+').Replace('_', '/');
            text = Encoding.UTF8.GetString(Convert.FromBase64String(body.PadRight(body.Length + ((4 - (body.Length % 4)) % 4), '=')));
        }
        catch (FormatException e)
        {
            throw new ReadYourWritesTokenException($"The read-your-writes token is damaged (not base64url after '{Prefix}').{Fix}", e);
        }

        var positions = new List<(int, ulong)>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = line.LastIndexOf('=');
            if (eq <= 0 || !ulong.TryParse(line.AsSpan(eq + 1), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var position))
            {
                throw new ReadYourWritesTokenException("The read-your-writes token is damaged (an entry is not shard=position)." + Fix);
            }

            var name = line[..eq];
            var shard = IndexOf(map.ShardNames, name);
            if (shard < 0)
            {
                throw new ReadYourWritesTokenException(
                    $"The read-your-writes token names shard '{name}', which this data source does not have (its shards: {string.Join(", ", map.ShardNames)})." + Fix);
            }

            positions.Add((shard, position));
        }

        return positions;
    }

    private static int IndexOf(IReadOnlyList<string> names, string name)
    {
        for (var i = 0; i < names.Count; i++)
        {
            if (string.Equals(names[i], name, StringComparison.Ordinal))
            {
                return i;
            }
        }

        return -1;
    }
}

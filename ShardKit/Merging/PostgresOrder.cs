namespace ShardKit;

/// <summary>
/// The default comparers of merge keys whose .NET order differs from PostgreSQL's: text by Unicode code point (as
/// <c>COLLATE "C"</c> on UTF-8, not by UTF-16 code unit), <c>float4</c>/<c>float8</c> with NaN above every number,
/// <c>bytea</c> byte by byte. Null for every other key: its .NET order already is PostgreSQL's (integers, numeric as
/// decimal, timestamps, dates, bool, uuid — <see cref="Guid.CompareTo(Guid)"/> compares the fields unsigned, which is
/// the byte order of the RFC layout PostgreSQL compares).
/// </summary>
internal static class PostgresOrder
{
    public static IComparer<TKey>? For<TKey>()
    {
        var type = Nullable.GetUnderlyingType(typeof(TKey)) ?? typeof(TKey);
        object? comparer = type == typeof(string) ? CodePointComparer.Instance
            : type == typeof(double) ? (typeof(TKey) == type ? FloatComparer.Double : FloatComparer.NullableDouble)
            : type == typeof(float) ? (typeof(TKey) == type ? FloatComparer.Single : FloatComparer.NullableSingle)
            : type == typeof(byte[]) ? ByteaComparer.Instance
            : null;
        return (IComparer<TKey>?)comparer;
    }

    /// <summary>Strings by code point: a surrogate pair (above U+FFFF) sorts after U+E000–U+FFFF, as UTF-8 bytes do.</summary>
    internal sealed class CodePointComparer : IComparer<string>
    {
        public static readonly CodePointComparer Instance = new();

        public int Compare(string? x, string? y)
        {
            if (ReferenceEquals(x, y))
            {
                return 0;
            }

            if (x is null || y is null)
            {
                return x is null ? -1 : 1;
            }

            var common = x.AsSpan().CommonPrefixLength(y);
            if (common == x.Length || common == y.Length)
            {
                return x.Length - y.Length;
            }

            int a = x[common], b = y[common];
            if (a >= 0xD800 && b >= 0xD800)
            {
                // Move the surrogates (D800–DFFF) above E000–FFFF; below D800 code units already are code points.
                a = a >= 0xE000 ? a - 0x800 : a + 0x2000;
                b = b >= 0xE000 ? b - 0x800 : b + 0x2000;
            }

            return a - b;
        }
    }

    /// <summary>Floating point as PostgreSQL orders it: NaN equals NaN and sorts above +Infinity.</summary>
    internal sealed class FloatComparer : IComparer<double>, IComparer<float>, IComparer<double?>, IComparer<float?>
    {
        public static readonly IComparer<double> Double = new FloatComparer();
        public static readonly IComparer<float> Single = new FloatComparer();
        public static readonly IComparer<double?> NullableDouble = new FloatComparer();
        public static readonly IComparer<float?> NullableSingle = new FloatComparer();

        public int Compare(double x, double y) =>
            double.IsNaN(x) ? (double.IsNaN(y) ? 0 : 1) : double.IsNaN(y) ? -1 : x.CompareTo(y);

        public int Compare(float x, float y) => Compare((double)x, y);

        // Null keys never reach here: the merge orders them first.
        public int Compare(double? x, double? y) => Compare(x!.Value, y!.Value);

        public int Compare(float? x, float? y) => Compare((double)x!.Value, y!.Value);
    }

    /// <summary><c>bytea</c> as PostgreSQL orders it: byte by byte, a prefix first.</summary>
    internal sealed class ByteaComparer : IComparer<byte[]>
    {
        public static readonly ByteaComparer Instance = new();

        public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    }
}

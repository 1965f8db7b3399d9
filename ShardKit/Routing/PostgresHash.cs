using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace ShardKit;

/// <summary>
/// PostgreSQL's own hash functions, bit for bit: <c>hashint8</c>, <c>hashtext</c> and <c>uuid_hash</c> as a
/// little-endian server computes them (Bob Jenkins' lookup3, as in PostgreSQL's <c>src/common/hashfn.c</c>).
/// Placement computed here can therefore be checked and moved in SQL on the shards themselves.
/// </summary>
/// <remarks>
/// The results never depend on the process, the machine or the .NET version: there is no seed, and bytes are
/// read explicitly as little-endian words. (A big-endian PostgreSQL server, e.g. s390x, hashes text and uuid
/// differently from every little-endian one; ShardKit follows the little-endian servers.)
/// </remarks>
internal static class PostgresHash
{
    // Strings up to this many UTF-8 bytes are encoded on the stack; longer ones borrow a pooled array.
    private const int StackBytes = 256;

    // lookup3's initial state: 0x9e3779b9 (the golden ratio) + 3923095, PostgreSQL's fixed "seed".
    private const uint Initial = 0x9e3779b9 + 3923095;

    // Npgsql sends text with a strict encoder, so a string it cannot send (a lone surrogate) has no placement either.
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// PostgreSQL's <c>hashint8(value)</c>. Because it folds the high half into the low half by sign, it equals
    /// <c>hashint4</c> and <c>hashint2</c> for the same number, so <see cref="int"/> and <see cref="short"/> keys are
    /// hashed by widening them to <see cref="long"/>.
    /// </summary>
    public static int HashInt8(long value)
    {
        var low = (uint)value;
        var high = (uint)(value >> 32);
        low ^= value >= 0 ? high : ~high;
        return (int)HashUInt32(low);
    }

    /// <summary>
    /// PostgreSQL's <c>hashtext(value)</c> under a deterministic collation (the default): lookup3 over the UTF-8
    /// bytes. Allocates nothing for strings of up to 256 UTF-8 bytes.
    /// </summary>
    /// <exception cref="EncoderFallbackException">The string holds a lone surrogate, which PostgreSQL text cannot store.</exception>
    public static int HashText(string value)
    {
        ArgumentNullException.ThrowIfNull(value);

        Span<byte> stack = stackalloc byte[StackBytes];
        int written;
        if (value.Length <= StackBytes && StrictUtf8.TryGetBytes(value, stack, out written))
        {
            return (int)HashBytes(stack[..written]);
        }

        var length = StrictUtf8.GetByteCount(value);
        var rented = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            written = StrictUtf8.GetBytes(value, rented);
            return (int)HashBytes(rented.AsSpan(0, written));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// PostgreSQL's <c>uuid_hash(value)</c>: lookup3 over the 16 bytes in RFC 4122 (network) order, the order
    /// PostgreSQL stores and prints them — not the mixed-endian order of <see cref="Guid.ToByteArray()"/>.
    /// </summary>
    public static int UuidHash(Guid value)
    {
        Span<byte> bytes = stackalloc byte[16];
        value.TryWriteBytes(bytes, bigEndian: true, out _);
        return (int)HashBytes(bytes);
    }

    /// <summary>PostgreSQL's <c>hash_bytes_uint32</c>: lookup3 over one 32-bit word, equal to <see cref="HashBytes"/> of its 4 bytes.</summary>
    internal static uint HashUInt32(uint k)
    {
        uint a, b, c;
        a = b = c = Initial + sizeof(uint);
        a += k;
        Final(ref a, ref b, ref c);
        return c;
    }

    /// <summary>PostgreSQL's <c>hash_bytes</c> (<c>hash_any</c>) on a little-endian machine.</summary>
    internal static uint HashBytes(ReadOnlySpan<byte> key)
    {
        uint a, b, c;
        a = b = c = Initial + (uint)key.Length;

        while (key.Length >= 12)
        {
            a += BinaryPrimitives.ReadUInt32LittleEndian(key);
            b += BinaryPrimitives.ReadUInt32LittleEndian(key[4..]);
            c += BinaryPrimitives.ReadUInt32LittleEndian(key[8..]);
            Mix(ref a, ref b, ref c);
            key = key[12..];
        }

        // The last 0..11 bytes, zero-padded; the lowest byte of c stays free (it carried the length in lookup2).
        switch (key.Length)
        {
            case 11: c += (uint)key[10] << 24; goto case 10;
            case 10: c += (uint)key[9] << 16; goto case 9;
            case 9: c += (uint)key[8] << 8; goto case 8;
            case 8:
                b += BinaryPrimitives.ReadUInt32LittleEndian(key[4..]);
                a += BinaryPrimitives.ReadUInt32LittleEndian(key);
                break;
            case 7: b += (uint)key[6] << 16; goto case 6;
            case 6: b += (uint)key[5] << 8; goto case 5;
            case 5: b += key[4]; goto case 4;
            case 4:
                a += BinaryPrimitives.ReadUInt32LittleEndian(key);
                break;
            case 3: a += (uint)key[2] << 16; goto case 2;
            case 2: a += (uint)key[1] << 8; goto case 1;
            case 1: a += key[0]; break;
        }

        // Unlike Jenkins' original, PostgreSQL runs the final mix even for an empty key.
        Final(ref a, ref b, ref c);
        return c;
    }

    private static void Mix(ref uint a, ref uint b, ref uint c)
    {
        a -= c; a ^= BitOperations.RotateLeft(c, 4); c += b;
        b -= a; b ^= BitOperations.RotateLeft(a, 6); a += c;
        c -= b; c ^= BitOperations.RotateLeft(b, 8); b += a;
        a -= c; a ^= BitOperations.RotateLeft(c, 16); c += b;
        b -= a; b ^= BitOperations.RotateLeft(a, 19); a += c;
        c -= b; c ^= BitOperations.RotateLeft(b, 4); b += a;
    }

    private static void Final(ref uint a, ref uint b, ref uint c)
    {
        c ^= b; c -= BitOperations.RotateLeft(b, 14);
        a ^= c; a -= BitOperations.RotateLeft(c, 11);
        b ^= a; b -= BitOperations.RotateLeft(a, 25);
        c ^= b; c -= BitOperations.RotateLeft(b, 16);
        a ^= c; a -= BitOperations.RotateLeft(c, 4);
        b ^= a; b -= BitOperations.RotateLeft(a, 14);
        c ^= b; c -= BitOperations.RotateLeft(b, 24);
    }
}

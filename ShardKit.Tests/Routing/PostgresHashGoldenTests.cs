using System.Text;

namespace ShardKit.Tests.Routing;

/// <summary>
/// Pins placement across ShardKit versions, processes and machines: every expected number below was returned by a
/// real PostgreSQL 15.18 (x86_64, UTF8) for <c>select hashint8(x)</c>, <c>hashtext(s)</c> or <c>uuid_hash(u)</c>.
/// None was produced by ShardKit. If one of these fails, rows already stored would move: never "fix" the numbers.
/// </summary>
public sealed class PostgresHashGoldenTests
{
    [TestCase(0L, -272711505)]
    [TestCase(1L, -1905060026)]
    [TestCase(-1L, 385747274)]
    [TestCase(2L, 1134484726)]
    [TestCase(42L, 1509752520)]
    [TestCase(-42L, -487492805)]
    [TestCase(100L, 108199381)]
    [TestCase(1000000L, -723906379)]
    [TestCase(2147483647L, -96758253)]
    [TestCase(-2147483648L, -1524351049)]
    [TestCase(2147483648L, -1524351049)]
    [TestCase(-2147483649L, -96758253)]
    [TestCase(4294967295L, 385747274)]
    [TestCase(4294967296L, -1905060026)]
    [TestCase(1234567890123L, 952082253)]
    [TestCase(-1234567890123L, -1005977386)]
    [TestCase(long.MaxValue, -1524351049)]
    [TestCase(long.MinValue, -96758253)]
    public void HashInt8_equals_PostgreSQL_hashint8(long key, int expected)
    {
        Assert.That(PostgresHash.HashInt8(key), Is.EqualTo(expected));
    }

    // hashint4(x) and hashint2(x) on the server; ShardKit hashes int and short keys by widening them to long.
    [TestCase(0, -272711505)]
    [TestCase(1, -1905060026)]
    [TestCase(-1, 385747274)]
    [TestCase(42, 1509752520)]
    [TestCase(int.MinValue, -1524351049)]
    [TestCase(int.MaxValue, -96758253)]
    public void HashInt8_of_a_widened_int_equals_PostgreSQL_hashint4(int key, int expected)
    {
        Assert.That(PostgresHash.HashInt8(key), Is.EqualTo(expected));
    }

    [TestCase((short)0, -272711505)]
    [TestCase((short)1, -1905060026)]
    [TestCase((short)-1, 385747274)]
    [TestCase((short)42, 1509752520)]
    [TestCase(short.MinValue, 193646934)]
    [TestCase(short.MaxValue, 1289782602)]
    public void HashInt8_of_a_widened_short_equals_PostgreSQL_hashint2(short key, int expected)
    {
        Assert.That(PostgresHash.HashInt8(key), Is.EqualTo(expected));
    }

    // Lengths 0..13 walk every branch of lookup3's tail switch; 24 and 25 bytes are two full blocks with and without a tail.
    [TestCase("", -1477818771)]
    [TestCase("a", 1075015857)]
    [TestCase("ab", 1718550461)]
    [TestCase("abc", -785388649)]
    [TestCase("abcd", -393934804)]
    [TestCase("abcde", -445659580)]
    [TestCase("abcdef", -1747460160)]
    [TestCase("abcdefg", 501636814)]
    [TestCase("abcdefgh", -1960928205)]
    [TestCase("abcdefghi", -92131489)]
    [TestCase("abcdefghij", 1948051852)]
    [TestCase("abcdefghijk", -1483803693)]
    [TestCase("abcdefghijkl", -1586087212)]
    [TestCase("abcdefghijklm", 405849808)]
    [TestCase("abcdefghijklmnopqrstuvwx", 1251586959)]
    [TestCase("abcdefghijklmnopqrstuvwxy", 980150893)]
    [TestCase("hello world", 1021725223)]
    [TestCase("Hello World", 726613166)]
    [TestCase(" ", 1206411442)]
    [TestCase("customer-42", 1216393712)]
    [TestCase("z\u00FCrich", -1380109836)]
    [TestCase("Z\u00FCrich", 1169491486)]
    [TestCase("\u6771\u4EAC", -209692131)]
    [TestCase("\U0001F389", -884816815)]
    [TestCase("a\U0001F389b", 1045907327)]
    [TestCase("\u03A9\u03BC\u03AD\u03B3\u03B1", -1294351392)]
    [TestCase("na\u00EFve caf\u00E9", -1812330988)]
    [TestCase("\u00FF", -651125260)]
    [TestCase("\u00E9", -983094517)]
    [TestCase("e\u0301", -1336232949)]
    public void HashText_equals_PostgreSQL_hashtext(string key, int expected)
    {
        Assert.That(PostgresHash.HashText(key), Is.EqualTo(expected));
    }

    // Around and past the 256-byte stack buffer, and multi-byte characters that overflow it.
    [TestCase("x", 255, 1893536167)]
    [TestCase("x", 256, 478490393)]
    [TestCase("x", 257, 1094305283)]
    [TestCase("\u00E9", 200, 260385969)]
    [TestCase("\u6771\u4EAC", 100, -495814630)]
    public void HashText_of_a_long_string_equals_PostgreSQL_hashtext(string unit, int repeat, int expected)
    {
        var key = new StringBuilder().Insert(0, unit, repeat).ToString();

        Assert.That(PostgresHash.HashText(key), Is.EqualTo(expected));
    }

    [TestCase("00000000-0000-0000-0000-000000000000", 1353656403)]
    [TestCase("ffffffff-ffff-ffff-ffff-ffffffffffff", -682383255)]
    [TestCase("00000000-0000-0000-0000-000000000001", -1046387463)]
    [TestCase("01000000-0000-0000-0000-000000000000", -1712977272)]
    [TestCase("00112233-4455-6677-8899-aabbccddeeff", 776152245)]
    [TestCase("6ba7b810-9dad-11d1-80b4-00c04fd430c8", -54382947)]
    [TestCase("f81d4fae-7dec-11d0-a765-00a0c91e6bf6", -1331800796)]
    [TestCase("0192f4a3-7b2c-7def-8a01-23456789abcd", -2084930108)]
    public void UuidHash_equals_PostgreSQL_uuid_hash(string key, int expected)
    {
        Assert.That(PostgresHash.UuidHash(Guid.Parse(key)), Is.EqualTo(expected));
    }

    [Test]
    public void HashText_rejects_a_lone_surrogate_that_PostgreSQL_text_cannot_hold()
    {
        Assert.That(() => PostgresHash.HashText("a\uD800b"), Throws.InstanceOf<EncoderFallbackException>());
    }

    [Test]
    public void Hashing_keys_up_to_256_UTF8_bytes_allocates_nothing()
    {
        string[] texts = ["", "a", "customer-42", "z\u00FCrich", "\u6771\u4EAC\U0001F389", new string('x', 256), new string('\u00E9', 128)];
        var guid = Guid.Parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8");
        // Warm up: JIT, the encoder's first use and tiered recompilation (on-stack replacement of a hot loop) may
        // allocate; they happen here, before the measured loop (a single call left them to it, and it failed rarely).
        var sink = 0;
        for (var i = 0; i < 2000; i++)
        {
            sink ^= HashAll(texts, guid);
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            sink ^= HashAll(texts, guid);
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.That(allocated, Is.EqualTo(0), $"allocated {allocated} bytes (sink {sink})");
    }

    private static int HashAll(string[] texts, Guid guid)
    {
        var hash = PostgresHash.HashInt8(long.MinValue) ^ PostgresHash.UuidHash(guid);
        foreach (var text in texts)
        {
            hash ^= PostgresHash.HashText(text);
        }

        return hash;
    }
}

using System.Text;
using Npgsql;

namespace ShardKit.Tests.Routing;

/// <summary>Random keys hashed by ShardKit and by a real shard, one round trip per key type.</summary>
public sealed class PostgresHashServerTests
{
    private const int KeyCount = 10_000;

    [Test]
    public async Task HashInt8_equals_the_server_for_random_longs()
    {
        var random = SeededRandom(out var seed);
        var keys = new long[KeyCount];
        for (var i = 0; i < keys.Length; i++)
        {
            // A third small (the sign fold matters most near zero), a third around the int32 edges, a third anywhere.
            keys[i] = (i % 3) switch
            {
                0 => random.NextInt64(-1000, 1000),
                1 => (random.Next(2) == 0 ? int.MinValue : int.MaxValue) + random.NextInt64(-1000, 1000),
                _ => random.NextInt64(long.MinValue, long.MaxValue),
            };
        }

        keys[0] = long.MinValue;
        keys[1] = long.MaxValue;

        var server = await ServerHashesAsync("hashint8", keys);

        AssertSameHashes(keys, PostgresHash.HashInt8, server, seed);
    }

    [Test]
    public async Task HashInt8_of_widened_ints_equals_the_server_hashint4_for_random_ints()
    {
        var random = SeededRandom(out var seed);
        var keys = new int[KeyCount];
        for (var i = 0; i < keys.Length; i++)
        {
            keys[i] = i % 2 == 0 ? random.Next(-1000, 1000) : (int)random.NextInt64(int.MinValue, (long)int.MaxValue + 1);
        }

        keys[0] = int.MinValue;
        keys[1] = int.MaxValue;

        var server = await ServerHashesAsync("hashint4", keys);

        AssertSameHashes(keys, k => PostgresHash.HashInt8(k), server, seed);
    }

    [Test]
    public async Task HashInt8_of_widened_shorts_equals_the_server_hashint2_for_random_shorts()
    {
        var random = SeededRandom(out var seed);
        var keys = new short[KeyCount];
        for (var i = 0; i < keys.Length; i++)
        {
            keys[i] = (short)random.Next(short.MinValue, short.MaxValue + 1);
        }

        keys[0] = short.MinValue;
        keys[1] = short.MaxValue;

        var server = await ServerHashesAsync("hashint2", keys);

        AssertSameHashes(keys, k => PostgresHash.HashInt8(k), server, seed);
    }

    [Test]
    public async Task HashText_equals_the_server_for_random_unicode_strings()
    {
        var random = SeededRandom(out var seed);
        var keys = new string[KeyCount];
        for (var i = 0; i < keys.Length; i++)
        {
            // Mostly short keys; one in ten long enough to leave the 256-byte stack buffer.
            var length = i % 10 == 0 ? random.Next(80, 400) : random.Next(0, 40);
            keys[i] = RandomText(random, length);
        }

        var server = await ServerHashesAsync("hashtext", keys);

        AssertSameHashes(keys, PostgresHash.HashText, server, seed);
    }

    [Test]
    public async Task UuidHash_equals_the_server_for_random_guids()
    {
        var random = SeededRandom(out var seed);
        var keys = new Guid[KeyCount];
        var bytes = new byte[16];
        for (var i = 0; i < keys.Length; i++)
        {
            random.NextBytes(bytes);
            keys[i] = (i % 3) switch
            {
                0 => new Guid(bytes),
                1 => Guid.NewGuid(),
                _ => Guid.CreateVersion7(),
            };
        }

        var server = await ServerHashesAsync("uuid_hash", keys);

        AssertSameHashes(keys, PostgresHash.UuidHash, server, seed);
    }

    /// <summary>The server's <paramref name="function"/> of each key, in the keys' order, in one round trip.</summary>
    private static async Task<int[]> ServerHashesAsync<T>(string function, T[] keys)
    {
        var shards = await Shards.GetAsync();
        await using var connection = new NpgsqlConnection(shards.ConnectionStrings[0]);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            $"select array_agg({function}(k) order by i) from unnest(@keys) with ordinality as t(k, i)", connection);
        command.Parameters.AddWithValue("keys", keys);

        var result = (int[]?)await command.ExecuteScalarAsync();
        Assert.That(result, Has.Length.EqualTo(keys.Length));
        return result!;
    }

    private static void AssertSameHashes<T>(T[] keys, Func<T, int> hash, int[] server, int seed)
    {
        var mismatches = new List<string>();
        for (var i = 0; i < keys.Length; i++)
        {
            var mine = hash(keys[i]);
            if (mine != server[i])
            {
                mismatches.Add($"{Describe(keys[i])}: ShardKit {mine}, server {server[i]}");
            }
        }

        Assert.That(mismatches, Is.Empty, $"seed {seed}; first mismatches:\n{string.Join('\n', mismatches.Take(10))}");
    }

    private static string Describe<T>(T key) =>
        key is string s ? $"'{s}' (UTF-16 {string.Join(' ', s.Select(c => ((int)c).ToString("X4", null)))})" : $"{key}";

    private static string RandomText(Random random, int length)
    {
        var text = new StringBuilder(length * 2);
        for (var i = 0; i < length; i++)
        {
            var codePoint = random.Next(6) switch
            {
                0 => random.Next(0x20, 0x7F),         // ASCII
                1 => random.Next(0xA0, 0x250),        // Latin-1 and Latin Extended (2 bytes)
                2 => random.Next(0x370, 0x530),       // Greek, Cyrillic (2 bytes)
                3 => random.Next(0x4E00, 0xA000),     // CJK (3 bytes)
                4 => random.Next(0x1F300, 0x1FB00),   // emoji (4 bytes, surrogate pairs)
                _ => AnyScalar(random),
            };
            text.Append(char.ConvertFromUtf32(codePoint));
        }

        return text.ToString();
    }

    // Any Unicode scalar value PostgreSQL text can hold: not NUL, not a surrogate.
    private static int AnyScalar(Random random)
    {
        while (true)
        {
            var codePoint = random.Next(1, 0x110000);
            if (codePoint is < 0xD800 or > 0xDFFF)
            {
                return codePoint;
            }
        }
    }

    private static Random SeededRandom(out int seed)
    {
        seed = Random.Shared.Next();
        TestContext.Out.WriteLine($"random seed {seed}");
        return new Random(seed);
    }
}

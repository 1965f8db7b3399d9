using BenchmarkDotNet.Attributes;

namespace ShardKit.Benchmarks;

/// <summary>
/// The cost of PostgreSQL-exact hash placement against the placement a hand-written router would reach for first:
/// <c>key.GetHashCode() % buckets</c> (fast, but unknown to the server and, for strings, different in every process).
/// </summary>
[MemoryDiagnoser]
public class HashBenchmarks
{
    private const int Buckets = 1024;

    private long _longKey = 1_234_567_890_123;
    private string _textKey = "customer-42";
    private Guid _guidKey = Guid.Parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8");
    private int _hash = -1_005_977_386;

    /// <summary>Resets the keys; fields rather than constants keep the JIT from folding the work away.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _longKey = 1_234_567_890_123;
        _textKey = "customer-42";
        _guidKey = Guid.Parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8");
        _hash = -1_005_977_386;
    }

    /// <summary>The hand-written baseline: .NET's own hash of a long, reduced modulo the bucket count.</summary>
    [Benchmark(Baseline = true)]
    public int GetHashCodeModulo() => (int)((uint)_longKey.GetHashCode() % Buckets);

    /// <summary>PostgreSQL's <c>hashint8</c>.</summary>
    [Benchmark]
    public int HashInt8() => PostgresHash.HashInt8(_longKey);

    /// <summary>PostgreSQL's <c>hashtext</c> of an 11-character ASCII key.</summary>
    [Benchmark]
    public int HashText() => PostgresHash.HashText(_textKey);

    /// <summary>PostgreSQL's <c>uuid_hash</c>.</summary>
    [Benchmark]
    public int UuidHash() => PostgresHash.UuidHash(_guidKey);

    /// <summary>The bucket of an already computed hash.</summary>
    [Benchmark]
    public int BucketOf() => BucketMath.BucketOf(_hash, Buckets);

    /// <summary>A long key all the way to its bucket, the like-for-like counterpart of the baseline.</summary>
    [Benchmark]
    public int HashInt8ThenBucketOf() => BucketMath.BucketOf(PostgresHash.HashInt8(_longKey), Buckets);
}

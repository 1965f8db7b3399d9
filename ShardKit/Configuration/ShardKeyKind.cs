namespace ShardKit;

/// <summary>The family a shard key value belongs to. Integers of every width share one kind, so 42 and 42L agree.</summary>
public enum ShardKeyKind
{
    /// <summary>No value.</summary>
    None = 0,

    /// <summary><see cref="short"/>, <see cref="int"/> or <see cref="long"/>, held as a 64-bit integer.</summary>
    Integer,

    /// <summary>A <see cref="string"/>.</summary>
    String,

    /// <summary>A <see cref="System.Guid"/> (PostgreSQL <c>uuid</c>).</summary>
    Guid,

    /// <summary>A <see cref="System.DateTime"/> (range and list sharding only).</summary>
    DateTime,

    /// <summary>A <see cref="System.DateTimeOffset"/>, compared as its UTC instant (range and list sharding only).</summary>
    DateTimeOffset,
}

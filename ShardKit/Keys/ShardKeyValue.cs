using System.Globalization;

namespace ShardKit;

/// <summary>
/// A shard key value without boxing: an integer, string, <see cref="System.Guid"/>, <see cref="System.DateTime"/> or
/// <see cref="System.DateTimeOffset"/>. Converts implicitly from each of those, so <c>ForKey(42L)</c> and
/// <c>ForKey("acme")</c> read naturally.
/// </summary>
public readonly struct ShardKeyValue : IEquatable<ShardKeyValue>, IComparable<ShardKeyValue>
{
    private readonly long _integer;
    private readonly Guid _guid;
    private readonly string? _string;
    private readonly DateTimeKind _dateTimeKind; // kept so a DateTime round-trips; ordering uses ticks only

    private ShardKeyValue(ShardKeyKind kind, long integer, Guid guid, string? text, DateTimeKind dateTimeKind = default)
    {
        Kind = kind;
        _integer = integer;
        _guid = guid;
        _string = text;
        _dateTimeKind = dateTimeKind;
    }

    /// <summary>Which kind of value this is; <see cref="ShardKeyKind.None"/> for <c>default</c>.</summary>
    public ShardKeyKind Kind { get; }

    /// <summary>The integer value (any of <c>short</c>, <c>int</c>, <c>long</c>).</summary>
    public long Integer => Kind == ShardKeyKind.Integer ? _integer : throw WrongKind(ShardKeyKind.Integer);

    /// <summary>The string value.</summary>
    public string String => Kind == ShardKeyKind.String ? _string! : throw WrongKind(ShardKeyKind.String);

    /// <summary>The <see cref="System.Guid"/> value.</summary>
    public Guid Guid => Kind == ShardKeyKind.Guid ? _guid : throw WrongKind(ShardKeyKind.Guid);

    /// <summary>The <see cref="System.DateTime"/> value.</summary>
    public DateTime DateTime => Kind == ShardKeyKind.DateTime ? new DateTime(_integer, _dateTimeKind) : throw WrongKind(ShardKeyKind.DateTime);

    /// <summary>The <see cref="System.DateTimeOffset"/> value, in UTC.</summary>
    public DateTimeOffset DateTimeOffset => Kind == ShardKeyKind.DateTimeOffset ? new DateTimeOffset(_integer, TimeSpan.Zero) : throw WrongKind(ShardKeyKind.DateTimeOffset);

    /// <summary>The value boxed as its CLR type (integers as <see cref="long"/>); for messages and custom strategies.</summary>
    public object? Value => Kind switch
    {
        ShardKeyKind.Integer => _integer,
        ShardKeyKind.String => _string,
        ShardKeyKind.Guid => _guid,
        ShardKeyKind.DateTime => DateTime,
        ShardKeyKind.DateTimeOffset => DateTimeOffset,
        _ => null,
    };

    /// <summary>An integer key.</summary>
    public static ShardKeyValue FromInt64(long value) => new(ShardKeyKind.Integer, value, default, null);

    /// <summary>A string key.</summary>
    public static ShardKeyValue FromString(string value) =>
        new(ShardKeyKind.String, 0, default, value ?? throw new ArgumentNullException(nameof(value)));

    /// <summary>A <see cref="System.Guid"/> key.</summary>
    public static ShardKeyValue FromGuid(Guid value) => new(ShardKeyKind.Guid, 0, value, null);

    /// <summary>A <see cref="System.DateTime"/> key.</summary>
    public static ShardKeyValue FromDateTime(DateTime value) =>
        new(ShardKeyKind.DateTime, value.Ticks, default, null, value.Kind);

    /// <summary>A <see cref="System.DateTimeOffset"/> key, normalized to UTC.</summary>
    public static ShardKeyValue FromDateTimeOffset(DateTimeOffset value) =>
        new(ShardKeyKind.DateTimeOffset, value.UtcTicks, default, null);

    /// <summary>
    /// Converts a boxed key. Throws <see cref="ShardRoutingException"/> for null and for types no strategy can place.
    /// </summary>
    public static ShardKeyValue FromObject(object? value) => TryFromObject(value, out var key)
        ? key
        : throw new ShardRoutingException(value is null
            ? "The shard key is null; a row needs a key to be placed. Set the key, or target a shard explicitly with OnShard(name)."
            : $"A shard key of type {value.GetType().Name} cannot be placed; use short, int, long, Guid or string " +
              "(DateTime and DateTimeOffset with range or list sharding).");

    /// <summary>Converts a boxed key when its type is supported; false for null and unsupported types.</summary>
    public static bool TryFromObject(object? value, out ShardKeyValue key)
    {
        switch (value)
        {
            case long l: key = FromInt64(l); return true;
            case int i: key = FromInt64(i); return true;
            case short s: key = FromInt64(s); return true;
            case string str: key = FromString(str); return true;
            case Guid g: key = FromGuid(g); return true;
            case DateTime d: key = FromDateTime(d); return true;
            case DateTimeOffset o: key = FromDateTimeOffset(o); return true;
            case ShardKeyValue k: key = k; return k.Kind != ShardKeyKind.None;
            default: key = default; return false;
        }
    }

    /// <summary>Converts an integer key.</summary>
    public static implicit operator ShardKeyValue(long value) => FromInt64(value);

    /// <summary>Converts an integer key.</summary>
    public static implicit operator ShardKeyValue(int value) => FromInt64(value);

    /// <summary>Converts an integer key.</summary>
    public static implicit operator ShardKeyValue(short value) => FromInt64(value);

    /// <summary>Converts a string key.</summary>
    public static implicit operator ShardKeyValue(string value) => FromString(value);

    /// <summary>Converts a <see cref="System.Guid"/> key.</summary>
    public static implicit operator ShardKeyValue(Guid value) => FromGuid(value);

    /// <summary>Converts a <see cref="System.DateTime"/> key.</summary>
    public static implicit operator ShardKeyValue(DateTime value) => FromDateTime(value);

    /// <summary>Converts a <see cref="System.DateTimeOffset"/> key.</summary>
    public static implicit operator ShardKeyValue(DateTimeOffset value) => FromDateTimeOffset(value);

    /// <inheritdoc />
    public bool Equals(ShardKeyValue other) => Kind == other.Kind && Kind switch
    {
        ShardKeyKind.String => string.Equals(_string, other._string, StringComparison.Ordinal),
        ShardKeyKind.Guid => _guid == other._guid,
        _ => _integer == other._integer,
    };

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is ShardKeyValue other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => Kind switch
    {
        ShardKeyKind.String => HashCode.Combine(Kind, StringComparer.Ordinal.GetHashCode(_string!)),
        ShardKeyKind.Guid => HashCode.Combine(Kind, _guid),
        _ => HashCode.Combine(Kind, _integer),
    };

    /// <summary>Orders keys of the same kind (strings ordinally, UTC instants for <see cref="System.DateTimeOffset"/>).</summary>
    public int CompareTo(ShardKeyValue other)
    {
        if (Kind != other.Kind)
        {
            throw new ShardRoutingException($"A {Kind} shard key cannot be compared with a {other.Kind} one; use one key type per map.");
        }

        return Kind switch
        {
            ShardKeyKind.String => string.CompareOrdinal(_string, other._string),
            ShardKeyKind.Guid => _guid.CompareTo(other._guid),
            _ => _integer.CompareTo(other._integer),
        };
    }

    /// <summary>Equality of kind and value.</summary>
    public static bool operator ==(ShardKeyValue left, ShardKeyValue right) => left.Equals(right);

    /// <summary>Inequality of kind or value.</summary>
    public static bool operator !=(ShardKeyValue left, ShardKeyValue right) => !left.Equals(right);

    /// <summary>True when <paramref name="left"/> orders before <paramref name="right"/>.</summary>
    public static bool operator <(ShardKeyValue left, ShardKeyValue right) => left.CompareTo(right) < 0;

    /// <summary>True when <paramref name="left"/> orders after <paramref name="right"/>.</summary>
    public static bool operator >(ShardKeyValue left, ShardKeyValue right) => left.CompareTo(right) > 0;

    /// <summary>True when <paramref name="left"/> orders before or equals <paramref name="right"/>.</summary>
    public static bool operator <=(ShardKeyValue left, ShardKeyValue right) => left.CompareTo(right) <= 0;

    /// <summary>True when <paramref name="left"/> orders after or equals <paramref name="right"/>.</summary>
    public static bool operator >=(ShardKeyValue left, ShardKeyValue right) => left.CompareTo(right) >= 0;

    /// <inheritdoc />
    public override string ToString() => Kind switch
    {
        ShardKeyKind.None => "(none)",
        ShardKeyKind.String => "'" + _string + "'",
        _ => Convert.ToString(Value, CultureInfo.InvariantCulture) ?? "",
    };

    private InvalidOperationException WrongKind(ShardKeyKind wanted) =>
        new($"This shard key is {Kind}, not {wanted}.");
}

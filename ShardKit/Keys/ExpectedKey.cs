namespace ShardKit;

/// <summary>
/// What a key passed by name (a parameter member, dictionary entry or DynamicParameters value) must hold: a value of
/// the kind its <c>[ShardKey]</c> members declare. A key is placed by its own type ("6" hashes as text, 6 as an
/// integer), so a key of another kind would reach another shard than the rows it names; it is refused instead.
/// Integers of every width are one kind and place alike, so an <c>int</c> for a <c>long</c> key is fine.
/// </summary>
internal sealed class ExpectedKey
{
    private readonly ShardKeyMember[] _members;
    private readonly int _kinds;

    public ExpectedKey(ShardKeyMember member)
        : this([member])
    {
    }

    private ExpectedKey(ShardKeyMember[] members)
    {
        _members = members;
        Name = members[0].Name;
        foreach (var member in members)
        {
            _kinds |= 1 << (int)member.Kind;
        }
    }

    /// <summary>The key member name, matched case-insensitively as Dapper matches parameter names.</summary>
    public string Name { get; }

    /// <summary>The same name declared by one more type (a second entity keyed by a member of the same name).</summary>
    public ExpectedKey With(ShardKeyMember member) => new([.. _members, member]);

    /// <summary>Returns <paramref name="key"/> when its kind is one the key is declared as; otherwise throws naming both types.</summary>
    public ShardKeyValue Check(ShardKeyValue key, string parameter, Type given) =>
        (_kinds & (1 << (int)key.Kind)) != 0 ? key : throw Mismatch(parameter, given);

    private ShardRoutingException Mismatch(string parameter, Type given)
    {
        var declared = string.Join(" and ", _members.Select(m => $"{m.DeclaringType.Name}.{m.Name} is {TypeName(m.ValueType)}"));
        var expected = string.Join(" or ", _members.Select(m => TypeName(m.ValueType)).Distinct());
        return new ShardRoutingException(
            $"The shard key parameter '{parameter}' is {TypeName(given)}, but {declared}. A key is placed by its own type, so it " +
            $"would reach another shard than the rows it names. Pass it as {expected} (integers of any width place alike), or " +
            "choose the shard explicitly with ForKey(key) or OnShard(name).");
    }

    private static string TypeName(Type type) =>
        Nullable.GetUnderlyingType(type) is { } underlying ? underlying.Name + "?" : type.Name;
}

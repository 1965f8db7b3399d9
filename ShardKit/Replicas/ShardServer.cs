namespace ShardKit;

/// <summary>
/// Which server of a shard a command runs on: slot 0 is the writer (the primary, or a standby promoted in its place),
/// slot i + 1 is standby i. The default value is the writer, so a path that never asks runs where it always did.
/// </summary>
internal readonly record struct ShardServer(int Slot)
{
    public static ShardServer Primary => default;

    public static ShardServer OnStandby(int index) => new(index + 1);

    public bool IsPrimary => Slot == 0;

    public int StandbyIndex => Slot - 1;
}

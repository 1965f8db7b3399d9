namespace ShardKit;

/// <summary>
/// A bucket move stopped (a shard failed, the freeze could not get its lock, verification found a difference), or was
/// refused before it began. A move that stopped is in the catalog where it stopped: resume it with
/// <see cref="ShardResharding.ResumeMoveAsync"/> or cancel it with <see cref="ShardResharding.CancelMoveAsync"/>. A refused
/// one (bad arguments, or a preflight finding: tables that differ, a shard without a fence) was not recorded, and
/// <see cref="MoveId"/> is null: fix what the message says and start it again.
/// </summary>
public sealed class ShardMoveException : ShardKitException
{
    /// <summary>Creates an exception for move <paramref name="moveId"/>.</summary>
    public ShardMoveException(string? moveId, string message, Exception? innerException = null)
        : base(message, innerException) => MoveId = moveId;

    /// <summary>Creates an exception with a message.</summary>
    public ShardMoveException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with no message.</summary>
    public ShardMoveException()
    {
    }

    /// <summary>The move's id; null when it was refused before it was recorded.</summary>
    public string? MoveId { get; }
}

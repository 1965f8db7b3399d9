using System.Net.Sockets;
using Npgsql;

namespace ShardKit;

/// <summary>
/// Classifies failures on a shard (<see cref="ShardErrorKind"/>) and shapes the exception the caller sees: connection
/// failures wrapped in <see cref="ShardConnectionException"/>, every other error left as it is and tagged with the
/// shard in <see cref="Exception.Data"/> under <see cref="ShardKitException.ShardDataKey"/>.
/// </summary>
internal static class ShardErrors
{
    /// <summary>
    /// Classifies <paramref name="error"/>. Npgsql reports a command timeout and a connect timeout alike (an
    /// <see cref="NpgsqlException"/> around a <see cref="TimeoutException"/>), so the caller says which phase failed:
    /// a shard that does not accept a connection in time is down, a query that runs too long is only slow.
    /// </summary>
    public static ShardErrorKind Classify(Exception error, bool opening) => error switch
    {
        ShardConnectionException => ShardErrorKind.ConnectionFailure,
        ShardKitException => ShardErrorKind.Other,
        OperationCanceledException => ShardErrorKind.Cancelled,
        PostgresException pg => IsConnectionState(pg.SqlState) ? ShardErrorKind.ConnectionFailure : ShardErrorKind.Server,
        TimeoutException or NpgsqlException { InnerException: TimeoutException } =>
            opening ? ShardErrorKind.ConnectionFailure : ShardErrorKind.Timeout,
        NpgsqlException { InnerException: SocketException or IOException } => ShardErrorKind.ConnectionFailure,
        NpgsqlException { InnerException: NpgsqlException inner } => Classify(inner, opening),
        NpgsqlException npgsql when npgsql.IsTransient => ShardErrorKind.ConnectionFailure,
        SocketException or IOException => ShardErrorKind.ConnectionFailure,
        _ => ShardErrorKind.Other,
    };

    /// <summary>
    /// An error that came from a shard or the way to it (its server, its connection, a timeout, or ShardKit's shaping of
    /// one): what code that must outlive a sick shard catches. Programming errors are not.
    /// </summary>
    public static bool FromShard(Exception error) =>
        error is ShardKitException or NpgsqlException or IOException or TimeoutException or SocketException;

    /// <summary>A sign the shard is down (counts against its breaker); a command timeout is not.</summary>
    public static bool IsConnectionFailure(Exception error) => Classify(error, opening: false) == ShardErrorKind.ConnectionFailure;

    /// <summary>Worth another attempt: a connection failure, or a server error PostgreSQL marks transient (40001, 40P01…).</summary>
    public static bool IsTransient(Exception error) => Classify(error, opening: false) switch
    {
        ShardErrorKind.ConnectionFailure => true,
        ShardErrorKind.Server => ((PostgresException)error).IsTransient,
        _ => false,
    };

    /// <summary>
    /// The exception to surface for <paramref name="error"/> on <paramref name="shard"/>: a connection failure wrapped
    /// so it names the shard, anything else the same instance tagged with the shard (callers rethrow it unchanged).
    /// </summary>
    /// <remarks>On a standby the message names it too, and the standby's own password is kept out as well.</remarks>
    public static Exception ForShard(Exception error, ShardInfo shard, bool opening, StandbyInfo? standby = null)
    {
        if (error is PostgresException { SqlState: ShardBucketMovedException.SqlState } moved)
        {
            return new ShardBucketMovedException(shard.Name, moved) { Data = { [ShardKitException.ShardDataKey] = shard.Name } };
        }

        if (error is not ShardKitException && Classify(error, opening) == ShardErrorKind.ConnectionFailure)
        {
            var message = ConnectionStrings.Redact(error.Message, shard.ConnectionString);
            error = new ShardConnectionException(shard.Name, (standby is null ? "" : $"standby '{standby.Name}': ") +
                error.GetType().Name + ": " + (standby is null ? message : ConnectionStrings.Redact(message, standby.ConnectionString)), error);
        }

        error.Data[ShardKitException.ShardDataKey] = shard.Name;
        return error;
    }

    // SQLSTATE class 08 (connection exception), the server shutting down or starting (57P01-03), too many connections.
    private static bool IsConnectionState(string sqlState) =>
        sqlState.StartsWith("08", StringComparison.Ordinal) || sqlState is "57P01" or "57P02" or "57P03" or "53300";

    /// <summary>
    /// Whether the server itself answered with the error (a <see cref="PostgresException"/> anywhere in the chain): it
    /// ended the statement's or the commit's transaction, so nothing of it was kept. Any other failure after a write was
    /// sent (a lost connection, a timeout) leaves its outcome unknown.
    /// </summary>
    public static bool AnsweredByServer(Exception? error)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            if (e is PostgresException)
            {
                return true;
            }
        }

        return false;
    }
}

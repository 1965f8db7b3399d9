using System.Net.Sockets;
using Npgsql;

namespace ShardKit;

/// <summary>Classifies errors: transient (worth a retry) and connection failures (a sign the shard is down).</summary>
internal static class ShardErrors
{
    public static bool IsTransient(Exception error) => error switch
    {
        ShardUnavailableException => false,
        NpgsqlException npgsql => npgsql.IsTransient,
        TimeoutException => true,
        _ => false,
    };

    public static bool IsConnectionFailure(Exception error) => error switch
    {
        PostgresException pg => pg.SqlState.StartsWith("08", StringComparison.Ordinal) // connection exception class
                                || pg.SqlState is "57P01" or "57P02" or "57P03" or "53300",
        NpgsqlException npgsql => npgsql.InnerException is SocketException or IOException or TimeoutException || npgsql.IsTransient,
        SocketException or IOException => true,
        _ => false,
    };
}

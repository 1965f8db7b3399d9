using Npgsql;

namespace ShardKit;

/// <summary>
/// The database a shard's spans name (db.namespace, server.address, server.port), read once from its connection
/// string. A multi-host string names its first host; the password is never read.
/// </summary>
internal sealed record ShardEndpoint(string? Database, string? Address, int Port)
{
    private const int DefaultPort = 5432;

    public static ShardEndpoint From(string connectionString)
    {
        try
        {
            var builder = new NpgsqlConnectionStringBuilder(connectionString);
            var host = builder.Host?.Split(',')[0].Trim();
            var port = builder.Port;
            if (host is not null && host.LastIndexOf(':') is var colon && colon > 0 && !host.EndsWith(']')
                && int.TryParse(host.AsSpan(colon + 1), out var hostPort))
            {
                (host, port) = (host[..colon], hostPort); // Host=db0:5433,db1:5433
            }

            return new ShardEndpoint(builder.Database ?? builder.Username, string.IsNullOrEmpty(host) ? null : host, port == 0 ? DefaultPort : port);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidCastException or OverflowException)
        {
            return new ShardEndpoint(null, null, DefaultPort); // validated elsewhere; telemetry only omits what it cannot read
        }
    }
}

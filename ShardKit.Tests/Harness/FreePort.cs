using System.Net;
using System.Net.Sockets;

namespace ShardKit.Tests.Harness;

internal static class FreePort
{
    /// <summary>A loopback port nothing listens on right now (the caller retries if another process takes it first).</summary>
    public static int Next()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}

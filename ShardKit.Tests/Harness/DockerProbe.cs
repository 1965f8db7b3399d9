using System.Net.Sockets;
using System.Text;

namespace ShardKit.Tests.Harness;

/// <summary>Asks, within a second, whether a Docker engine answers; the client alone is not enough.</summary>
internal static class DockerProbe
{
    public static async Task<bool> EngineAnswersAsync()
    {
        var host = Environment.GetEnvironmentVariable("DOCKER_HOST");
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            using var socket = await ConnectAsync(host, cts.Token);
            if (socket is null)
            {
                return false;
            }

            await socket.SendAsync(Encoding.ASCII.GetBytes("GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"), cts.Token);
            var buffer = new byte[64];
            var read = await socket.ReceiveAsync(buffer, cts.Token);
            return Encoding.ASCII.GetString(buffer, 0, read).Contains(" 200 ", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or IOException or UriFormatException)
        {
            return false;
        }
    }

    private static async Task<Socket?> ConnectAsync(string? dockerHost, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(dockerHost) || dockerHost.StartsWith("unix://", StringComparison.Ordinal))
        {
            var path = string.IsNullOrEmpty(dockerHost) ? "/var/run/docker.sock" : dockerHost["unix://".Length..];
            if (!File.Exists(path))
            {
                return null;
            }

            var unix = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await unix.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
            return unix;
        }

        var uri = new Uri(dockerHost.Replace("tcp://", "http://", StringComparison.Ordinal));
        var tcp = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await tcp.ConnectAsync(uri.Host, uri.Port, ct);
        return tcp;
    }
}

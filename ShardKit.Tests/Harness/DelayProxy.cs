using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Npgsql;

namespace ShardKit.Tests.Harness;

/// <summary>
/// A loopback TCP proxy in front of one shard. It adds a fixed one-way delay to every byte in each direction (a
/// remote shard on one machine), and on demand refuses new connections and resets the open ones (a shard that goes
/// down), then restores.
/// </summary>
public sealed class DelayProxy : IAsyncDisposable
{
    private readonly IPEndPoint _upstream;
    private readonly ConcurrentDictionary<int, Link> _links = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private TcpListener? _listener;
    private int _nextLinkId;
    private long _delayTicks;
    private int _accepted;
    private int _closed;
    private int _cut;

    private DelayProxy(IPEndPoint upstream, TimeSpan oneWayDelay)
    {
        _upstream = upstream;
        OneWayDelay = oneWayDelay;
        _listener = Listen(0);
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _ = AcceptLoopAsync(_listener);
    }

    /// <summary>The loopback port clients connect to.</summary>
    public int Port { get; }

    /// <summary>Connections accepted so far (a cancel request is one too: PostgreSQL takes it on a new connection).</summary>
    public int AcceptedConnections => Volatile.Read(ref _accepted);

    /// <summary>Connections that have ended, either side closing (a cancel request's ends once the server has acted on it).</summary>
    public int ClosedConnections => Volatile.Read(ref _closed);

    /// <summary>True while the proxy refuses connections.</summary>
    public bool IsCut => Volatile.Read(ref _cut) != 0;

    /// <summary>The delay added to each direction; may be changed while connections are open.</summary>
    public TimeSpan OneWayDelay
    {
        get => TimeSpan.FromTicks(Interlocked.Read(ref _delayTicks));
        set => Interlocked.Exchange(ref _delayTicks, value.Ticks);
    }

    /// <summary>Starts a proxy in front of the server a connection string names.</summary>
    public static DelayProxy Start(string upstreamConnectionString, TimeSpan oneWayDelay)
    {
        var builder = new NpgsqlConnectionStringBuilder(upstreamConnectionString);
        var host = builder.Host ?? "127.0.0.1";
        var address = IPAddress.TryParse(host, out var ip) ? ip : Dns.GetHostAddresses(host)[0];
        return new DelayProxy(new IPEndPoint(address, builder.Port), oneWayDelay);
    }

    /// <summary>The connection string with its host and port replaced by this proxy's.</summary>
    public string Rewrite(string upstreamConnectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(upstreamConnectionString) { Host = "127.0.0.1", Port = Port };
        return builder.ConnectionString;
    }

    /// <summary>Refuses new connections and resets every open one, like a shard that just died.</summary>
    /// <remarks>
    /// The listener stays open and resets what it accepts: a stopped listener let go of its port, and in a full test run
    /// another test's proxy could be given the same port, so the "cut" shard answered again through a live server.
    /// </remarks>
    public void Cut()
    {
        Volatile.Write(ref _cut, 1);
        foreach (var link in _links.Values)
        {
            link.Reset();
        }
    }

    /// <summary>
    /// Holds what the clients of the connections open now send to the server (the links made later pass freely) until
    /// <see cref="ReleaseHeld"/>: a query sent on a pooled connection waits here, unread by its backend, while a cancel
    /// request (a new connection) reaches the server.
    /// </summary>
    public void HoldOpenLinks()
    {
        foreach (var link in _links.Values)
        {
            link.Hold();
        }
    }

    /// <summary>Lets what <see cref="HoldOpenLinks"/> held go on to the server.</summary>
    public void ReleaseHeld()
    {
        foreach (var link in _links.Values)
        {
            link.Release();
        }
    }

    /// <summary>Accepts connections again on the same port.</summary>
    public void Restore()
    {
        if (!_stopping.IsCancellationRequested)
        {
            Volatile.Write(ref _cut, 0);
        }
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        _stopping.Cancel();
        lock (_gate)
        {
            _listener?.Stop();
            _listener = null;
        }

        Cut();
        _stopping.Dispose();
        return ValueTask.CompletedTask;
    }

    private static TcpListener Listen(int port)
    {
        var listener = new TcpListener(IPAddress.Loopback, port);
        listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Start(128);
        return listener;
    }

    private async Task AcceptLoopAsync(TcpListener listener)
    {
        while (true)
        {
            Socket client;
            try
            {
                client = await listener.AcceptSocketAsync();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException)
            {
                return; // stopped by Dispose
            }

            Interlocked.Increment(ref _accepted);
            if (IsCut)
            {
                Link.ResetSocket(client);
                continue;
            }

            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(Socket client)
    {
        var upstream = new Socket(_upstream.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.NoDelay = true;
        try
        {
            await upstream.ConnectAsync(_upstream);
        }
        catch (SocketException)
        {
            Link.ResetSocket(client);
            upstream.Dispose();
            return;
        }

        var id = Interlocked.Increment(ref _nextLinkId);
        var link = new Link(client, upstream);
        _links[id] = link;
        if (IsCut)
        {
            link.Reset();
        }

        try
        {
            await Task.WhenAll(PumpAsync(client, upstream, link, toServer: true), PumpAsync(upstream, client, link, toServer: false));
        }
        finally
        {
            _links.TryRemove(id, out _);
            link.Reset();
            Interlocked.Increment(ref _closed);
        }
    }

    // Reads are stamped on arrival and written once their delay has passed, so the delay adds latency without
    // limiting throughput: later chunks wait in the channel while earlier ones are in flight.
    private async Task PumpAsync(Socket from, Socket to, Link link, bool toServer)
    {
        var pending = Channel.CreateUnbounded<(long Due, byte[] Data)>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var writer = WriteDelayedAsync(pending.Reader, to, link, toServer);
        var buffer = new byte[64 * 1024];
        try
        {
            while (true)
            {
                var read = await from.ReceiveAsync(buffer, SocketFlags.None);
                if (read == 0)
                {
                    break;
                }

                var delay = Interlocked.Read(ref _delayTicks);
                var due = Stopwatch.GetTimestamp() + delay * Stopwatch.Frequency / TimeSpan.TicksPerSecond;
                pending.Writer.TryWrite((due, buffer.AsSpan(0, read).ToArray()));
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            link.Reset();
        }
        finally
        {
            pending.Writer.TryComplete();
        }

        await writer;
        try
        {
            to.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // the other side is gone already
        }
    }

    private static async Task WriteDelayedAsync(ChannelReader<(long Due, byte[] Data)> reader, Socket to, Link link, bool toServer)
    {
        try
        {
            await foreach (var (due, data) in reader.ReadAllAsync())
            {
                var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), due);
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait);
                }

                // Task.Delay may wake a little early on coarse timers; the contract is "at least the delay".
                while (Stopwatch.GetTimestamp() < due)
                {
                    Thread.SpinWait(50);
                }

                if (toServer)
                {
                    await link.HeldAsync();
                }

                await to.SendAsync(data, SocketFlags.None);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            link.Reset();
        }
    }

    private sealed class Link(Socket client, Socket upstream)
    {
        private int _reset;
        private volatile TaskCompletionSource? _held;

        public void Hold() => _held ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Release() => Interlocked.Exchange(ref _held, null)?.TrySetResult();

        public Task HeldAsync() => _held?.Task ?? Task.CompletedTask;

        public void Reset()
        {
            if (Interlocked.Exchange(ref _reset, 1) == 0)
            {
                Release();
                ResetSocket(client);
                ResetSocket(upstream);
            }
        }

        // Linger 0 makes Close send RST: the peer sees a broken connection, not a polite end of stream.
        public static void ResetSocket(Socket socket)
        {
            try
            {
                socket.LingerState = new LingerOption(true, 0);
                socket.Close();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // already closed
            }
        }
    }
}

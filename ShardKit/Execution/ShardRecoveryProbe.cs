using Npgsql;

namespace ShardKit;

/// <summary>
/// Brings a shard back as soon as it answers: while its breaker is open, a <c>select 1</c> on a new connection from the
/// shard's pool every <see cref="CircuitBreakerOptions.ProbeInterval"/> (on the data source's <see cref="TimeProvider"/>);
/// the first answer closes the breaker. Commands keep failing fast meanwhile. It stops when the breaker closes or the
/// data source is disposed; one loop per shard at most.
/// </summary>
internal sealed class ShardRecoveryProbe(ShardCircuitBreaker breaker, ShardReplicas servers, TimeSpan interval, TimeProvider time,
    CancellationToken stopping)
{
    /// <summary>The longest one probe may wait for the shard before the next one tries.</summary>
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(5);

    private int _running;

    /// <summary>The running loop, if any: the data source waits for it when disposed.</summary>
    public Task Running { get; private set; } = Task.CompletedTask;

    /// <summary>Starts the loop unless it already runs (the breaker calls it each time it opens).</summary>
    public void Start()
    {
        if (!stopping.IsCancellationRequested && Interlocked.Exchange(ref _running, 1) == 0)
        {
            Running = Task.Run(RunAsync, CancellationToken.None);
        }
    }

    private async Task RunAsync()
    {
        try
        {
            // Connections idle in the pool most likely died with the server: a probe must not spend its turns on them.
            servers.Writer.Clear();
            while (breaker.IsOpen && !stopping.IsCancellationRequested)
            {
                await Task.Delay(interval, time, stopping).ConfigureAwait(false);
                if (await AnswersAsync().ConfigureAwait(false))
                {
                    breaker.OnSuccess();
                }
            }
        }
#pragma warning disable CA1031 // cancelled or disposed under the probe's feet: nothing to report
        catch (Exception) when (stopping.IsCancellationRequested)
#pragma warning restore CA1031
        {
            // The data source is being disposed.
        }
        finally
        {
            Volatile.Write(ref _running, 0);
        }

        // The breaker may have opened again between the last check and the flag's reset: keep watching it then.
        if (breaker.IsOpen)
        {
            Start();
        }
    }

    private async Task<bool> AnswersAsync()
    {
        using var timeout = new CancellationTokenSource(ProbeTimeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stopping, timeout.Token);
        try
        {
            var connection = await servers.Writer.OpenConnectionAsync(linked.Token).ConfigureAwait(false); // a promoted standby once it writes
            await using (connection.ConfigureAwait(false))
            {
                var command = new NpgsqlCommand("select 1", connection);
                await using (command.ConfigureAwait(false))
                {
                    await command.ExecuteScalarAsync(linked.Token).ConfigureAwait(false);
                }
            }

            return true;
        }
#pragma warning disable CA1031 // a probe that fails for any reason just means the shard is not back yet
        catch (Exception) when (!stopping.IsCancellationRequested)
#pragma warning restore CA1031
        {
            return false;
        }
    }
}

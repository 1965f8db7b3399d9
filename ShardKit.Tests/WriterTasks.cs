namespace ShardKit.Tests;

/// <summary>How a test's writer group stops when the test ends, failed or not.</summary>
internal static class WriterTasks
{
    /// <summary>
    /// Cancels <paramref name="stop"/> and waits up to 30 seconds for <paramref name="tasks"/>; their failures were the
    /// test's to check, so none is raised here (it would hide the test's own failure).
    /// </summary>
    public static async Task StopAsync(CancellationTokenSource stop, IEnumerable<Task> tasks)
    {
        await stop.CancelAsync();
        try
        {
            await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(30));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            TestContext.Out.WriteLine($"writers stopped with {e.GetType().Name}: {e.Message}");
        }
    }
}

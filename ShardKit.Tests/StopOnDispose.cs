namespace ShardKit.Tests;

/// <summary>
/// A token source for a test's background loops (writers, readers) that cancels when it is disposed: a test that fails
/// before it stops its loops stops them as it ends, instead of leaving them writing to shards that are being dropped for
/// the rest of the run (one failed test used to fill a CI run with timeouts that way).
/// </summary>
internal sealed class StopOnDispose : CancellationTokenSource
{
    protected override void Dispose(bool disposing)
    {
        if (disposing && !IsCancellationRequested)
        {
            try
            {
                Cancel();
            }
            catch (AggregateException)
            {
                // A loop's own cancellation callback failed as it stopped; the test's outcome stands without it.
            }
        }

        base.Dispose(disposing);
    }
}

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

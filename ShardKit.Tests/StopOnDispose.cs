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

namespace ShardKit;

/// <summary>
/// What a data source's distributed transactions share: the validated settings, whether any has begun (the recovery
/// service waits for that before it touches a shard), and a test hook awaited at each step of a two-phase commit.
/// </summary>
internal sealed class DistributedContext(DistributedSettings settings)
{
    private readonly TaskCompletionSource _inUse = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _decisionLogReady;

    public DistributedSettings Settings { get; } = settings;

    /// <summary>Completes when the first distributed transaction begins.</summary>
    public Task InUse => _inUse.Task;

    /// <summary>Test hook: awaited at each step of a two-phase commit, with the shard for per-shard steps.</summary>
    public Func<DistributedStep, string?, Task>? OnStep { get; set; }

    /// <summary>
    /// True once the coordinator's decision log is known to exist; the coordinator's local commit writes its decision
    /// inside its own transaction, where a missing table could not be created on the fly.
    /// </summary>
    public bool DecisionLogReady
    {
        get => Volatile.Read(ref _decisionLogReady);
        set => Volatile.Write(ref _decisionLogReady, value);
    }

    public void Begun() => _inUse.TrySetResult();

    public Task StepAsync(DistributedStep step, string? shard) => OnStep is { } hook ? hook(step, shard) : Task.CompletedTask;
}

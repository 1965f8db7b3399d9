using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Npgsql;
using Polly;

namespace ShardKit;

/// <summary>
/// Every shard of a data source as the layers below the public doors see it: the frozen map, one pooled Npgsql data
/// source (named after the shard, so Npgsql's own metrics carry it), one Polly resilience pipeline (retries, on the
/// settings' <see cref="TimeProvider"/>) and one circuit breaker with its recovery probe per shard, the settings and the logger. Owned and disposed by the data source.
/// </summary>
internal sealed class ShardSet : IAsyncDisposable, IDisposable
{
    private readonly NpgsqlDataSource[] _dataSources;
    private readonly ShardReplicas[] _replicas;
    private readonly StandbyMonitor _monitor;
    private readonly IDisposable _lagGauge;
    private readonly ResiliencePipeline[] _pipelines;
    private readonly ShardCircuitBreaker[] _breakers;
    private readonly ShardRecoveryProbe[] _probes;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ShardMapFollower? _follower;
    private ShardMap _map;
    private int _disposed;

    public ShardSet(ShardMap map, DataSourceSettings settings)
    {
        _map = map;
        Settings = settings;
        _readCheckMissingUntil = new long[map.Shards.Count];
        _fences = map.Shards.Select(_ => new FenceProbe()).ToArray();
        Logger = settings.LoggerFactory.CreateLogger("ShardKit");
        _dataSources = map.Shards.Select(shard => Build(shard.ConnectionString, shard.Name, settings)).ToArray();
        _replicas = map.Shards.Select(shard => new ShardReplicas(shard, _dataSources[shard.Index],
            shard.Standbys.Select(standby => new StandbyServer(standby, Build(standby.ConnectionString, standby.Name, settings))).ToArray())).ToArray();
        foreach (var entity in settings.Entities)
        {
            KeyNames.Remember(ShardKeyMember.For(entity));
        }

        _pipelines = map.Shards.Select(BuildPipeline).ToArray();
        _breakers = map.Shards.Select(shard => new ShardCircuitBreaker(shard.Name, settings.CircuitBreaker, settings.Time, Logger)).ToArray();
        _probes = map.Shards.Select(shard => StartProbingWhenOpen(shard.Index)).ToArray();
        foreach (var shard in _replicas)
        {
            shard.Promoted = _breakers[shard.Shard.Index].OnSuccess; // the new writer answered the check that found it
        }

        _monitor = new StandbyMonitor(_replicas, settings.Replicas, settings.Time, Logger);
        _monitor.Start(_stopping.Token);
        _lagGauge = ShardKitTelemetry.ObserveStandbyLag(ObserveLag);

        if (settings.StoredMap is { } stored)
        {
            _follower = new ShardMapFollower(this, stored);
            try
            {
                _follower.Start();
            }
            catch
            {
                Dispose();
                throw;
            }
        }
    }

    /// <summary>The map commands route by now: fixed, or the stored map's latest epoch. Read it once per command.</summary>
    public ShardMap Map => Volatile.Read(ref _map);

    /// <summary>The stored map's follower; null when the map is fixed.</summary>
    public ShardMapFollower? Follower => _follower;

    /// <summary>Routes by <paramref name="map"/> from now on, unless a newer map is in place already.</summary>
    public bool Replace(ShardMap map)
    {
        while (true)
        {
            var current = Volatile.Read(ref _map);
            if (map.Epoch <= current.Epoch)
            {
                return false;
            }

            if (ReferenceEquals(Interlocked.CompareExchange(ref _map, map, current), current))
            {
                return true;
            }
        }
    }

    // Per shard, until when reads of moving buckets send no check_owned there (0: they do). A fence seeded by an older
    // ShardKit and moved by an older mover has no such procedure; its reads run unchecked, as they did then, and the
    // shard is asked again after ReadCheckRetry.
    private readonly long[] _readCheckMissingUntil;

    /// <summary>How long a shard whose fence lacks <c>shardkit.check_owned</c> is read without the check.</summary>
    public static readonly TimeSpan ReadCheckRetry = TimeSpan.FromMinutes(1);

    /// <summary>Whether reads of moving buckets on <paramref name="shard"/> name them to its fence (see <see cref="ReadCheckMissing"/>).</summary>
    public bool SendsReadCheck(int shard) =>
        Volatile.Read(ref _readCheckMissingUntil[shard]) is var until && (until == 0 || Settings.Time.GetTimestamp() >= until);

    /// <summary>The fence of <paramref name="shard"/> has no <c>shardkit.check_owned</c>: reads there go unchecked for a while.</summary>
    public void ReadCheckMissing(int shard)
    {
        Volatile.Write(ref _readCheckMissingUntil[shard],
            Settings.Time.GetTimestamp() + (long)(ReadCheckRetry.TotalSeconds * Settings.Time.TimestampFrequency));
        ShardKitLog.ReadCheckMissing(Logger, NameOf(shard), ReadCheckRetry.TotalMinutes);
    }

    // Per shard, for a data source without a stored map: whether the shard carries a fence, asked once.
    private readonly FenceProbe[] _fences;

    /// <summary>How long a shard found without a fence is written without naming buckets before it is asked again.</summary>
    public static readonly TimeSpan FenceAskAgain = TimeSpan.FromMinutes(1);

    /// <summary>How long after a question that got no answer (the shard down or slow) the next write asks again.</summary>
    public static readonly TimeSpan FenceAskAfterFailure = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Whether writes to <paramref name="shard"/> name their buckets to its fence (<c>WriteFence.Named</c>). Always, when
    /// the data source follows a stored map (every shard of it carries a fence). Without one, only where the shard
    /// carries a fence of this map's bucket count (someone seeded a stored map from this configuration, and moves may
    /// run): the first write asks the shard once, synchronously (the write's text depends on the answer) on a
    /// connection of its own with short timeouts, so that an app that never reads the catalog still gets
    /// <see cref="ShardBucketMovedException"/> for an update of a moved key instead of 0 rows on the old owner. A shard
    /// without a fence is asked again in the background after <see cref="FenceAskAgain"/>; one that gave no answer, by
    /// the next write after <see cref="FenceAskAfterFailure"/>. A fence, once seen, is named until a write finds it gone
    /// (<see cref="FenceMissing"/>).
    /// </summary>
    public bool NamesBuckets(int shard)
    {
        if (_follower is not null)
        {
            return true;
        }

        if (Map.Strategy is not HashShardingStrategy hash)
        {
            return false; // no buckets to name
        }

        var probe = _fences[shard];
        var state = Volatile.Read(ref probe.State);
        if (state == FenceProbe.Fenced)
        {
            return true;
        }

        var due = Settings.Time.GetTimestamp() >= Volatile.Read(ref probe.AskAgainAt);
        if (state == FenceProbe.Unknown && due)
        {
            lock (probe)
            {
                if (Volatile.Read(ref probe.State) == FenceProbe.Unknown && Settings.Time.GetTimestamp() >= Volatile.Read(ref probe.AskAgainAt))
                {
                    Answer(shard, probe, AskSync(shard), hash.Buckets.Count);
                }
            }

            return Volatile.Read(ref probe.State) == FenceProbe.Fenced;
        }

        if (state == FenceProbe.NotFenced && due && Interlocked.CompareExchange(ref probe.Asking, 1, 0) == 0)
        {
            // Off the write's path: the same question, on a pool thread (at most once a minute per shard, bounded by the
            // question's own timeouts).
            _ = Task.Run(() =>
            {
                try
                {
                    var answer = AskSync(shard);
                    if (!IsDisposed)
                    {
                        Answer(shard, probe, answer, hash.Buckets.Count);
                    }
                }
                finally
                {
                    Volatile.Write(ref probe.Asking, 0);
                }
            });
        }

        return false;
    }

    /// <summary>
    /// A write named its buckets to <paramref name="shard"/> and found no <c>shardkit.name_buckets</c> there (the fence
    /// was removed, or the shard restored without it): the next write asks again.
    /// </summary>
    public void FenceMissing(int shard)
    {
        if (_follower is null && shard >= 0 && shard < _fences.Length)
        {
            Volatile.Write(ref _fences[shard].AskAgainAt, 0);
            Volatile.Write(ref _fences[shard].State, FenceProbe.Unknown);
        }
    }

    private void Answer(int shard, FenceProbe probe, int? fenceBuckets, int mapBuckets)
    {
        var now = Settings.Time.GetTimestamp();
        switch (fenceBuckets)
        {
            case null:
                // No answer: the write that follows reports the shard's failure; a later write asks again.
                Volatile.Write(ref probe.AskAgainAt, now + Ticks(FenceAskAfterFailure));
                return;
            case { } count when count == mapBuckets:
                Volatile.Write(ref probe.State, FenceProbe.Fenced);
                ShardKitLog.FenceWithoutStoredMap(Logger, NameOf(shard));
                return;
            case { } count when count > 0 && Interlocked.Exchange(ref probe.Warned, 1) == 0:
                // Named by this map, the buckets would be other buckets of the fence: the rows' own checks still run.
                ShardKitLog.FenceOfOtherBucketCount(Logger, NameOf(shard), count, mapBuckets);
                break;
        }

        Volatile.Write(ref probe.AskAgainAt, now + Ticks(FenceAskAgain));
        Volatile.Write(ref probe.State, FenceProbe.NotFenced);
    }

    private long Ticks(TimeSpan span) => (long)(span.TotalSeconds * Settings.Time.TimestampFrequency);

    // The fence's bucket count, 0 without a fence, null without an answer.
    private int? AskSync(int shard)
    {
        try
        {
            using var connection = FenceProbeSource(shard).OpenConnection();
            using var command = new NpgsqlCommand(HasFence, connection);
            if (command.ExecuteScalar() is not true)
            {
                return 0;
            }

            command.CommandText = FenceBuckets;
            return (int)command.ExecuteScalar()!;
        }
        catch (Exception e) when (ShardErrors.FromShard(e) || e is ObjectDisposedException or InvalidOperationException)
        {
            ShardKitLog.FenceQuestionFailed(Logger, NameOf(shard), e.Message);
            return null;
        }
    }

    private const string HasFence = "select to_regprocedure('shardkit.name_buckets(text)') is not null";

    private const string FenceBuckets = "select count(*)::int from shardkit.bucket_owner";

    // The question goes on a pool of its own (one connection, short timeouts, never multiplexed): a write may hold the
    // shard's last pooled connection while it asks, and a down shard must not hold the write for the full connect timeout.
    private NpgsqlDataSource FenceProbeSource(int shard)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        var probe = _fences[shard];
        if (Volatile.Read(ref probe.Source) is { } source)
        {
            return source;
        }

        var built = Build(new NpgsqlConnectionStringBuilder(Map.Shards[shard].ConnectionString)
        {
            Timeout = 3, CommandTimeout = 3, Multiplexing = false, MaxPoolSize = 1, MinPoolSize = 0,
        }.ConnectionString, NameOf(shard) + "-fence", Settings);
        if (Interlocked.CompareExchange(ref probe.Source, built, null) is { } other)
        {
            built.Dispose();
            return other;
        }

        return built;
    }

    private sealed class FenceProbe
    {
        public const int Unknown = 0, Fenced = 1, NotFenced = 2;
        public int State;
        public long AskAgainAt;
        public int Asking;
        public int Warned;
        public NpgsqlDataSource? Source;
    }

    public DataSourceSettings Settings { get; }

    public ILogger Logger { get; }

    /// <summary>The shard key names untyped commands are routed by.</summary>
    public ShardKeyNames KeyNames { get; } = new();

    public int Count => _dataSources.Length;

    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>The pool of the shard's writer: its primary, or a standby the background check found promoted in its place.</summary>
    public NpgsqlDataSource DataSourceAt(int shard) => _replicas[shard].Writer;

    public NpgsqlDataSource DataSourceAt(int shard, ShardServer server) => _replicas[shard].DataSourceOf(server);

    /// <summary>The shard's servers and the choice of one for a read.</summary>
    public ShardReplicas ReplicasAt(int shard) => _replicas[shard];

    /// <summary>The background check of the standbys (tests refresh it on demand).</summary>
    public StandbyMonitor Standbys => _monitor;

    /// <summary>The shard's pipeline: every command that may run again runs through it, one breaker-admitted call per attempt.</summary>
    public ResiliencePipeline PipelineAt(int shard) => _pipelines[shard];

    /// <summary>Whether the pipelines hold the user's own strategies (UseResilience) instead of ShardKit's retry.</summary>
    public bool HasCustomResilience => Settings.ConfigureResilience is not null;

    public ShardCircuitBreaker BreakerAt(int shard) => _breakers[shard];

    public ShardInfo ShardAt(int shard) => Map.Shards[shard];

    public string NameOf(int shard) => Map.ShardNames[shard];

    private static NpgsqlDataSource Build(string connectionString, string name, DataSourceSettings settings)
    {
        var builder = new NpgsqlDataSourceBuilder(connectionString) { Name = name };
        builder.UseLoggerFactory(settings.LoggerFactory);
        // A refused statement of a pipelined batch then says which one it was, so the error can name the item.
        builder.ConnectionStringBuilder.IncludeFailedBatchedCommand = true;
        // Inside ShardKit's client span Npgsql's span would be a second client span for the same call: one per call.
        builder.ConfigureTracing(static tracing => tracing
            .ConfigureCommandFilter(static _ => !ShardKitTelemetry.InCommandSpan)
            .ConfigureBatchFilter(static _ => !ShardKitTelemetry.InCommandSpan)
            .ConfigureCopyOperationFilter(static _ => !ShardKitTelemetry.InCommandSpan));
        settings.ConfigureShard?.Invoke(builder);
        return builder.Build();
    }

    // ShardKit's retry strategy, or the user's own strategies (UseResilience) in its place; time from the settings either way.
    private ResiliencePipeline BuildPipeline(ShardInfo shard)
    {
        var builder = new ResiliencePipelineBuilder { Name = "ShardKit", InstanceName = shard.Name, TimeProvider = Settings.Time };
        if (Settings.ConfigureResilience is { } configure)
        {
            configure(builder, shard.Name);
        }
        else
        {
            builder.AddShardRetry(shard.Name, Logger);
        }

        return builder.Build();
    }

    // Wires a shard's breaker to its background recovery probe (none when the options turn it off).
    private ShardRecoveryProbe StartProbingWhenOpen(int shard)
    {
        var options = Settings.CircuitBreaker;
        var probe = new ShardRecoveryProbe(_breakers[shard], _replicas[shard], options.ProbeInterval, Settings.Time, _stopping.Token);
        if (options.ProbeInterval > TimeSpan.Zero)
        {
            _breakers[shard].Opened = probe.Start;
        }

        return probe;
    }

    private IEnumerable<Measurement<long>> ObserveLag() =>
        _replicas.SelectMany(shard => shard.Standbys.Where(s => s.Status.LagBytes is not null).Select(standby =>
            new Measurement<long>(standby.Status.LagBytes!.Value, new(ShardKitTelemetry.ShardTag, shard.Shard.Name),
                new(ShardKitTelemetry.StandbyTag, standby.Info.Name))));

    private IEnumerable<NpgsqlDataSource> AllDataSources() =>
        _dataSources.Concat(_replicas.SelectMany(shard => shard.Standbys.Select(standby => standby.DataSource)));

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _lagGauge.Dispose();
            await _stopping.CancelAsync().ConfigureAwait(false);
            if (_follower is not null)
            {
                await _follower.DisposeAsync().ConfigureAwait(false);
            }

            await _monitor.Running.ConfigureAwait(false); // never faults: a stopped check ends quietly
            foreach (var probe in _probes)
            {
                await probe.Running.ConfigureAwait(false); // never faults: a stopped probe ends quietly
            }

            foreach (var source in AllDataSources())
            {
                await source.DisposeAsync().ConfigureAwait(false);
            }

            foreach (var fence in _fences)
            {
                if (fence.Source is { } probeSource)
                {
                    await probeSource.DisposeAsync().ConfigureAwait(false);
                }
            }

            _stopping.Dispose();
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _lagGauge.Dispose();
            _stopping.Cancel(); // a probe or standby check still running ends quietly at its next step
            _follower?.DisposeAsync().AsTask().GetAwaiter().GetResult();
            foreach (var source in AllDataSources())
            {
                source.Dispose();
            }

            foreach (var fence in _fences)
            {
                fence.Source?.Dispose();
            }

            _stopping.Dispose();
        }
    }
}

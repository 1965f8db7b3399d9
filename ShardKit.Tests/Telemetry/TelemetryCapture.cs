using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;

namespace ShardKit.Tests.Telemetry;

/// <summary>
/// Captures everything ShardKit emits: its activities, its measurements and (as a logger factory) its log events.
/// Listeners are process-wide, so tests using it must not run beside other ShardKit tests.
/// </summary>
internal sealed class TelemetryCapture : ILoggerFactory, ILogger
{
    private readonly ActivityListener _activities;
    private readonly MeterListener _meters = new();

    public TelemetryCapture()
    {
        _activities = new ActivityListener
        {
            ShouldListenTo = s => s.Name == ShardKitInfo.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => Activities.Add(a),
        };
        ActivitySource.AddActivityListener(_activities);
        _meters.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == ShardKitInfo.Name)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _meters.SetMeasurementEventCallback<double>((i, v, tags, _) => Measurements.Add((i.Name, v, tags.ToArray())));
        _meters.SetMeasurementEventCallback<int>((i, v, tags, _) => Measurements.Add((i.Name, v, tags.ToArray())));
        _meters.SetMeasurementEventCallback<long>((i, v, tags, _) => Measurements.Add((i.Name, v, tags.ToArray())));
        _meters.Start();
    }

    public ConcurrentBag<Activity> Activities { get; } = [];

    public ConcurrentBag<(string Name, double Value, KeyValuePair<string, object?>[] Tags)> Measurements { get; } = [];

    public ConcurrentBag<(int EventId, LogLevel Level, string Message)> Logs { get; } = [];

    /// <summary>Every tag and name captured, as text: what must never contain a password or a parameter value.</summary>
    public IEnumerable<string> AllText() =>
        Activities.SelectMany(a => a.TagObjects.Select(t => $"{t.Key}={t.Value}").Append(a.DisplayName))
            .Concat(Measurements.SelectMany(m => m.Tags.Select(t => $"{t.Key}={t.Value}")))
            .Concat(Logs.Select(l => l.Message));

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Logs.Add((eventId.Id, logLevel, formatter(state, exception)));

    public void Dispose()
    {
        _activities.Dispose();
        _meters.Dispose();
    }
}

using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace ShardKit.Tests.Migrations;

/// <summary>A logger factory that keeps every event ShardKit logs, for assertions.</summary>
internal sealed class LogCapture : ILoggerFactory, ILogger
{
    public ConcurrentQueue<(int EventId, LogLevel Level, string Message)> Logs { get; } = [];

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Logs.Enqueue((eventId.Id, logLevel, formatter(state, exception)));

    public void Dispose()
    {
    }
}

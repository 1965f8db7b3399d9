namespace ShardKit.Tool;

/// <summary>A command line or configuration the tool cannot use; the message says what to pass instead.</summary>
internal sealed class UsageException(string message) : Exception(message);

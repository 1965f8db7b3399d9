namespace ShardKit;

/// <summary>
/// The shard configuration is invalid. <see cref="Errors"/> lists every problem found, not only the first; the
/// message joins them. Connection string passwords never appear in it.
/// </summary>
public sealed class ShardConfigurationException : ShardKitException
{
    /// <summary>Creates an exception listing each configuration error.</summary>
    public ShardConfigurationException(IReadOnlyList<string> errors)
        : base(Format(errors)) => Errors = errors;

    /// <summary>Creates an exception for one configuration error.</summary>
    public ShardConfigurationException(string message)
        : this([message])
    {
    }

    /// <summary>Creates an exception for one configuration error and its cause.</summary>
    public ShardConfigurationException(string message, Exception? innerException)
        : base(message, innerException) => Errors = [message];

    /// <summary>Creates an exception with no message.</summary>
    public ShardConfigurationException()
        : this([])
    {
    }

    /// <summary>Every problem found in the configuration.</summary>
    public IReadOnlyList<string> Errors { get; }

    private static string Format(IReadOnlyList<string> errors) => errors.Count switch
    {
        0 => "The ShardKit configuration is invalid.",
        1 => "Invalid ShardKit configuration: " + errors[0],
        _ => "Invalid ShardKit configuration (" + errors.Count + " errors):" + Environment.NewLine
             + string.Join(Environment.NewLine, errors.Select(e => " - " + e)),
    };
}

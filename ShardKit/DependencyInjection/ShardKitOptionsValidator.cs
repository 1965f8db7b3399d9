using Microsoft.Extensions.Options;

namespace ShardKit;

/// <summary>
/// Validates <see cref="ShardKitOptions"/> with the same rules as <see cref="ShardedDataSourceBuilder.Build"/>, so
/// <c>ValidateOnStart()</c> rejects a bad shard list before the first query. Reports every error at once.
/// </summary>
public sealed class ShardKitOptionsValidator : IValidateOptions<ShardKitOptions>
{
    /// <inheritdoc />
    public ValidateOptionsResult Validate(string? name, ShardKitOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = ShardMapFactory.Validate(options);
        if (options.ConfigurationErrors is null)
        {
            errors.AddRange(EntityRegistration.Conflicts(EntityRegistration.FromOptions(options, errors)));
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

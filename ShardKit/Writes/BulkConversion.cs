namespace ShardKit;

/// <summary>How a property's value is shaped before Npgsql writes it, chosen from the property type and the column type.</summary>
internal enum BulkConversion
{
    /// <summary>Written as it is; Npgsql converts it to the column type or refuses.</summary>
    None,

    /// <summary>An enum into a text column: its name.</summary>
    EnumName,

    /// <summary>An enum into a <c>smallint</c> column: its value, checked.</summary>
    ToInt16,

    /// <summary>An enum into an <c>integer</c> column: its value, checked.</summary>
    ToInt32,

    /// <summary>An enum into a <c>bigint</c> column: its value, checked.</summary>
    ToInt64,

    /// <summary>A <see cref="DateTimeOffset"/> as the same instant in UTC, the only offset Npgsql writes to <c>timestamptz</c>.</summary>
    ToUniversalTime,
}

using Npgsql;

namespace ShardKit;

/// <summary>Checks connection strings without ever repeating their passwords.</summary>
internal static class ConnectionStrings
{
    /// <summary>A description of what is wrong, safe to show, or null when the string is usable.</summary>
    public static string? Check(string? connectionString)
    {
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            return "no connection string";
        }

        try
        {
            var builder = new NpgsqlConnectionStringBuilder(connectionString);
            return string.IsNullOrEmpty(builder.Host) ? "a connection string with no Host" : null;
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidCastException or OverflowException)
        {
            return "a malformed connection string (" + Redact(e.Message, connectionString) + ")";
        }
    }

    /// <summary>Removes the password, and anything that looks like one, from a text about a connection string.</summary>
    public static string Redact(string text, string connectionString)
    {
        foreach (var part in connectionString.Split(';'))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                continue;
            }

            var keyword = part[..eq].Trim();
            var value = part[(eq + 1)..].Trim();
            if (value.Length > 0 && (keyword.Equals("password", StringComparison.OrdinalIgnoreCase)
                                     || keyword.Equals("pwd", StringComparison.OrdinalIgnoreCase)))
            {
                text = text.Replace(value, "***", StringComparison.Ordinal);
            }
        }

        return text;
    }
}

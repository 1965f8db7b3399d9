namespace ShardKit;

public sealed partial class ShardedConnection
{
    /// <summary>
    /// Where this connection's reads go when their shard has standbys; starts as the data source's
    /// <see cref="ReplicaOptions.ReadPolicy"/>. Writes and transactions always use the primary. A single call may choose
    /// otherwise: <c>db.ForKey(key).WithReadPolicy(ReadPolicy.Standby)</c>, or <see cref="FanOutOptions.ReadPolicy"/>.
    /// </summary>
    public ReadPolicy ReadPolicy
    {
        get => Session.ReadPolicy;
        set => Session.ReadPolicy = value;
    }

    /// <summary>
    /// Whether a standby must have replayed this connection's writes before it serves a read of their shard (else the
    /// primary does); starts as the data source's <see cref="ReplicaOptions.ReadYourWrites"/>.
    /// </summary>
    public bool ReadYourWrites
    {
        get => Session.ReadYourWrites;
        set => Session.ReadYourWrites = value;
    }

    /// <summary>
    /// The WAL positions of this connection's writes per shard as a short URL- and cookie-safe string: pass it to
    /// <see cref="ResumeFrom"/> on a later connection (the next web request, another process) so its standby reads see
    /// those writes too.
    /// </summary>
    /// <example>
    /// <code>
    /// response.Cookies.Append("rw", db.ReadYourWritesToken);          // after the request's writes
    /// db.ResumeFrom(request.Cookies["rw"]);                            // next request, before its reads
    /// </code>
    /// </example>
    public string ReadYourWritesToken => Session.Written.ToToken();

    /// <summary>
    /// Takes the write positions of a <see cref="ReadYourWritesToken"/> (positions only grow: an older token changes nothing).
    /// Null or empty does nothing, so a first request can pass a missing cookie as it is.
    /// </summary>
    /// <exception cref="ReadYourWritesTokenException">The token was not written by ShardKit for a data source with these shards.</exception>
    public void ResumeFrom(string? token)
    {
        if (!string.IsNullOrEmpty(token))
        {
            Session.Written.Resume(token);
        }
    }
}

using Npgsql;

namespace ShardKit;

/// <summary>The end of a load: commit every shard, or roll every shard back, and the error that says which.</summary>
internal sealed partial class BulkLoad<T>
{
    private BulkInsertException FailedBeforeCommit(string[] names, ShardCopy<T>[] copies)
    {
        const string nothingKept = " No shard kept any row of this load: every shard rolled back.";
        var errorType = _inputError is not null
            ? "input: " + (_inputError.InnerException?.GetType().Name ?? "invalid row")
            : _shardFailures.Values.First().Error.GetType().Name;
        ShardKitLog.BulkInsertFailed(_session.Shards.Logger, _table, errorType);
        if (_inputError is { } input)
        {
            return new BulkInsertException(input.Message + nothingKept, input.InnerException,
                new BulkFault(input.RowIndex, input.Property, []), [], names, []);
        }

        var failed = _shardFailures.OrderBy(f => f.Key).ToArray();
        var failures = failed.Select(f => f.Value).ToArray();
        var named = failed.FirstOrDefault(f => copies[f.Key].RefusedRow is not null);
        var refused = named.Value is null ? null : copies[named.Key].RefusedRow;
        return new BulkInsertException(
            $"Bulk insert into {_table} failed on {failures.Length} shard(s): " +
            string.Join("; ", failed.Select(f => Describe(f.Value, copies[f.Key].RefusedRow))) + "." + nothingKept,
            (named.Value ?? failures[0]).Error, new BulkFault(refused?.RowIndex, refused?.Property, failures), [], names, []);

        static string Describe(ShardFailure failure, RefusedInputRow? row) =>
            row is null ? $"{failure.Shard}: {ErrorText(failure.Error)}" : $"{failure.Shard} refused {row.Description}: {ErrorText(failure.Error)}";
    }

    // A server error's detail can quote the row ("Failing row contains (…)", "Key (id)=(7)"): the message keeps to the
    // SQLSTATE and the primary text, and the whole error stays in Failures and InnerException.
    private static string ErrorText(Exception error) =>
        error is PostgresException pg ? $"{pg.SqlState}: {pg.MessageText}" : error.Message;

    private async Task<BulkInsertResult> CommitAsync(ShardCopy<T>[] copies)
    {
        var targets = copies.Where(c => c.Transaction is not null).Select(c => new ShardCommitTarget(c.Shard, c.Name, c.Transaction!)).ToArray();
        var connections = targets.Select(t => t.Transaction.Connection).ToArray(); // Npgsql lets go of them at the commit
        var outcome = await CommitAfterAllCopies.CommitAsync(targets).ConfigureAwait(false);
        await DisposeTransactionsAsync(copies).ConfigureAwait(false);
        for (var i = 0; i < targets.Length; i++)
        {
            if (connections[i] is { } connection && outcome.Committed.Contains(targets[i].Name))
            {
                await _session.WroteAsync(targets[i].Shard, connection, async: true, CancellationToken.None).ConfigureAwait(false); // read-your-writes
            }
        }

        if (!outcome.Succeeded)
        {
            throw FailedInCommit(outcome);
        }

        foreach (var copy in copies.Where(c => c.Transaction is not null))
        {
            ShardKitTelemetry.BulkRows.Add(copy.Rows, new KeyValuePair<string, object?>(ShardKitTelemetry.ShardTag, copy.Name));
        }

        return new BulkInsertResult(copies.ToDictionary(c => c.Name, c => c.Rows));
    }

    private BulkInsertException FailedInCommit(BulkCommitOutcome outcome)
    {
        var failed = outcome.RolledBack.Concat(outcome.InDoubt).ToArray();
        var rolledBack = Names.Except(outcome.Committed).Except(outcome.InDoubt.Select(f => f.Shard)).ToArray();
        ShardKitLog.BulkInsertCommitIncomplete(_session.Shards.Logger, _table,
            string.Join(",", failed.Select(f => f.Shard)), string.Join(",", outcome.Committed));
        var message = $"Bulk insert into {_table}: every COPY succeeded but the commit failed on " +
            string.Join("; ", failed.Select(f => $"{f.Shard}: {ErrorText(f.Error)}")) + ". " +
            $"Committed (they keep their rows): {List(outcome.Committed)}. Rolled back: {List(rolledBack)}. " +
            $"In doubt (check them): {List(outcome.InDoubt.Select(f => f.Shard))}.";
        return new BulkInsertException(message, failed[0].Error, new BulkFault(null, null, failed),
            outcome.Committed, rolledBack, outcome.InDoubt.Select(f => f.Shard).ToArray());

        static string List(IEnumerable<string> shards) => shards.Any() ? string.Join(", ", shards) : "none";
    }

    private static async Task RollBackAsync(ShardCopy<T>[] copies)
    {
        await Task.WhenAll(copies.Where(c => c.Transaction is not null).Select(async c =>
        {
            try
            {
                await c.Transaction!.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // a broken connection has rolled back already: the server ends its transaction
            catch (Exception)
#pragma warning restore CA1031
            {
            }
        })).ConfigureAwait(false);
        await DisposeTransactionsAsync(copies).ConfigureAwait(false);
    }

    private static async Task DisposeTransactionsAsync(ShardCopy<T>[] copies)
    {
        foreach (var copy in copies)
        {
            if (copy.Transaction is not null)
            {
                try
                {
                    await copy.Transaction.DisposeAsync().ConfigureAwait(false);
                }
#pragma warning disable CA1031 // the outcome is decided; a broken connection is replaced on its next use
                catch (Exception)
#pragma warning restore CA1031
                {
                }
            }
        }
    }
}

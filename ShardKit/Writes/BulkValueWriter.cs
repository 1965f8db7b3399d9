using Npgsql;

namespace ShardKit;

/// <summary>Writes one property of <paramref name="row"/> into the current row of a binary COPY as <paramref name="dataTypeName"/>.</summary>
internal delegate Task BulkValueWriter<in T>(NpgsqlBinaryImporter importer, T row, string dataTypeName, CancellationToken cancellationToken);

namespace ShardKit;

/// <summary>One column of a load: the property it comes from, the type Npgsql writes it as, and its compiled writer.</summary>
internal sealed record BulkColumn<T>(string Property, string Column, string DataTypeName, BulkValueWriter<T> Write);

using System.Buffers.Binary;

namespace ShardKit;

/// <summary>
/// Splits a binary COPY stream whose first column is the row's bucket (int4) into rows, arriving in pieces of any size:
/// after the 19-byte header and its extension, each row is a 16-bit field count and per field a 32-bit length and that
/// many bytes (-1: NULL); -1 ends the stream. A row is handed out without its bucket field, ready for a COPY that lacks
/// that column, and stays valid until the next <see cref="Append"/>.
/// </summary>
internal sealed class BucketRowReader
{
    private const int HeaderBytes = 19;
    private byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;
    private bool _headerRead;

    /// <summary>Whether the end-of-data marker was read.</summary>
    public bool Ended { get; private set; }

    /// <summary>Adds the next piece of the stream (rows handed out before are invalid from here on).</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        if (_end + data.Length > _buffer.Length)
        {
            var kept = _end - _start;
            var buffer = kept + data.Length > _buffer.Length ? new byte[Math.Max(_buffer.Length * 2, kept + data.Length)] : _buffer;
            _buffer.AsSpan(_start, kept).CopyTo(buffer);
            (_buffer, _start, _end) = (buffer, 0, kept);
        }

        data.CopyTo(_buffer.AsSpan(_end));
        _end += data.Length;
    }

    /// <summary>
    /// The next complete row: its bucket, and the row without the bucket field (field count included) to write to the
    /// target as it is; false when the buffered bytes hold no complete row.
    /// </summary>
    public bool TryRead(out int bucket, out ReadOnlyMemory<byte> row)
    {
        (bucket, row) = (0, default);
        if (!_headerRead)
        {
            if (_end - _start < HeaderBytes)
            {
                return false;
            }

            var extension = BinaryPrimitives.ReadInt32BigEndian(_buffer.AsSpan(_start + 15));
            if (_end - _start < HeaderBytes + extension)
            {
                return false;
            }

            _start += HeaderBytes + extension;
            _headerRead = true;
        }

        var available = _buffer.AsSpan(_start, _end - _start);
        if (Ended || available.Length < 2)
        {
            return false;
        }

        var fields = BinaryPrimitives.ReadInt16BigEndian(available);
        if (fields < 0)
        {
            Ended = true;
            _start += 2;
            return false;
        }

        var length = 2;
        for (var i = 0; i < fields; i++)
        {
            if (available.Length < length + 4)
            {
                return false;
            }

            length += 4 + Math.Max(0, BinaryPrimitives.ReadInt32BigEndian(available[length..]));
            if (available.Length < length)
            {
                return false;
            }
        }

        // Field 0 is the bucket: length 4, then the int4. What follows it is the row as the target's COPY expects it,
        // once the field count before it is one less: written over the bucket's last two bytes.
        bucket = BinaryPrimitives.ReadInt32BigEndian(available[6..]);
        BinaryPrimitives.WriteInt16BigEndian(_buffer.AsSpan(_start + 8), (short)(fields - 1));
        row = _buffer.AsMemory(_start + 8, length - 8);
        _start += length;
        return true;
    }
}

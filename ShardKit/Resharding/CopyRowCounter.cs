using System.Buffers.Binary;

namespace ShardKit;

/// <summary>
/// Counts the rows of a binary COPY stream as it passes through in pieces of any size: the 19-byte header and its
/// extension, then per row a 16-bit field count and per field a 32-bit length and that many bytes (-1: NULL), then -1.
/// </summary>
internal sealed class CopyRowCounter
{
    private const int HeaderBytes = 19;
    private readonly byte[] _pending = new byte[HeaderBytes];
    private State _state = State.Header;
    private int _need = HeaderBytes;
    private int _have;
    private long _skip;
    private int _fieldsLeft;

    private enum State
    {
        Header,
        Row,
        Field,
        Done,
    }

    /// <summary>Rows seen so far.</summary>
    public long Rows { get; private set; }

    /// <summary>Reads the next piece of the stream.</summary>
    public void Feed(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty && _state != State.Done)
        {
            if (_skip > 0)
            {
                var skipped = (int)Math.Min(_skip, data.Length);
                data = data[skipped..];
                _skip -= skipped;
                continue;
            }

            var take = Math.Min(_need - _have, data.Length);
            data[..take].CopyTo(_pending.AsSpan(_have));
            _have += take;
            data = data[take..];
            if (_have == _need)
            {
                _have = 0;
                Advance();
            }
        }
    }

    private void Advance()
    {
        switch (_state)
        {
            case State.Header:
                _skip = BinaryPrimitives.ReadInt32BigEndian(_pending.AsSpan(15));
                Expect(State.Row, 2);
                break;
            case State.Row:
                var fields = BinaryPrimitives.ReadInt16BigEndian(_pending);
                if (fields < 0)
                {
                    _state = State.Done;
                    break;
                }

                Rows++;
                _fieldsLeft = fields;
                if (fields > 0)
                {
                    Expect(State.Field, 4);
                }

                break;
            case State.Field:
                _skip = Math.Max(0, BinaryPrimitives.ReadInt32BigEndian(_pending));
                if (--_fieldsLeft == 0)
                {
                    Expect(State.Row, 2);
                }

                break;
        }
    }

    private void Expect(State state, int bytes)
    {
        _state = state;
        _need = bytes;
    }
}

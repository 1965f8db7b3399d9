namespace ShardKit.Tool;

/// <summary>A plain left-aligned text table, as wide as its widest cells.</summary>
internal sealed class TextTable(params string[] headers)
{
    private readonly List<string[]> _rows = [];

    public void Add(params string[] cells) => _rows.Add(cells);

    public void WriteTo(TextWriter output)
    {
        var widths = headers.Select((h, i) => _rows.Select(r => r[i].Length).Prepend(h.Length).Max()).ToArray();
        output.WriteLine(Line(headers, widths));
        output.WriteLine(string.Join("  ", widths.Select(w => new string('-', w))));
        foreach (var row in _rows)
        {
            output.WriteLine(Line(row, widths));
        }
    }

    private static string Line(string[] cells, int[] widths) => string.Join("  ", cells.Select((c, i) => c.PadRight(widths[i]))).TrimEnd();
}

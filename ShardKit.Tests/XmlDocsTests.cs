using System.Xml.Linq;

namespace ShardKit.Tests;

/// <summary>The XML docs that ship with the package describe the public API and nothing else.</summary>
public sealed class XmlDocsTests
{
    private static readonly System.Reflection.Assembly Library = typeof(ShardedConnection).Assembly;

    private static List<string> DocumentedTypes()
    {
        var xml = XDocument.Load(Path.ChangeExtension(Library.Location, ".xml"));
        return xml.Descendants("member").Select(m => (string)m.Attribute("name")!).Where(n => n.StartsWith("T:", StringComparison.Ordinal))
            .Select(n => n[2..]).ToList();
    }

    [Test]
    public void The_xml_docs_hold_public_types_only()
    {
        var hidden = DocumentedTypes().Where(name => Library.GetType(name) is { IsVisible: false }).ToList();
        Assert.That(hidden, Is.Empty);
        Assert.That(DocumentedTypes(), Does.Not.Contain("ShardKit.FanOutRun"));
    }

    [Test]
    public void Every_public_type_is_documented()
    {
        var documented = DocumentedTypes().ToHashSet();
        var missing = Library.GetExportedTypes().Select(t => t.FullName!.Replace('+', '.')).Where(n => !documented.Contains(n)).ToList();
        Assert.That(missing, Is.Empty);
    }
}

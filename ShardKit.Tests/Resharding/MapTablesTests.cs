namespace ShardKit.Tests.Resharding;

// Which fan-out queries of dynamic rows are judged by a moved table's key column during a move: a single SELECT of one
// listed table alone. Anything else is kept whole (it cannot be told which table its rows are from).
[TestFixture]
public sealed class MapTablesTests
{
    private static readonly MapTables Tables = MapTables.Parse(["items:id", "sales.orders:customer_id"]);

    [TestCase("select id, payload from items", "id")]
    [TestCase("SELECT * FROM Items WHERE n > 3", "id")]
    [TestCase("select * from public.items", "id")]
    [TestCase("select * from \"items\"", "id")]
    [TestCase("select customer_id, count(*) from sales.orders group by customer_id", "customer_id")]
    [TestCase("select * from \"Items\"", null)] // a quoted name keeps its case: another table
    [TestCase("select * from orders", null)] // sales.orders is not on the search path's public schema
    [TestCase("select * from other.items", null)]
    [TestCase("select * from notes", null)]
    [TestCase("select i.id from items i join notes n on n.id = i.id", null)]
    [TestCase("select * from items where id in (select id from notes)", null)]
    [TestCase("with x as (select * from items) select * from x", null)]
    [TestCase("select * from items; select * from items", null)]
    [TestCase("delete from items returning id", null)]
    [TestCase("select 1", null)]
    [TestCase("", null)]
    public void The_key_column_is_named_only_for_a_select_of_one_listed_table(string sql, string? column) =>
        Assert.That(Tables.KeyColumnOf(sql), Is.EqualTo(column));

    [Test]
    public void No_tables_name_no_column() => Assert.That(MapTables.Parse([]).KeyColumnOf("select * from items"), Is.Null);
}

namespace ShardKit.Tests.Telemetry;

public sealed class CommandSummaryTests
{
    [TestCase("select * from orders where customer_id = @Id", "SELECT", "orders", "SELECT orders")]
    [TestCase("  SELECT id FROM public.orders o WHERE o.id = $1", "SELECT", "public.orders", "SELECT public.orders")]
    [TestCase("select * from \"Order Lines\" limit 5", "SELECT", "\"Order Lines\"", "SELECT \"Order Lines\"")]
    [TestCase("insert into orders (customer_id, id) values (@CustomerId, @Id)", "INSERT", "orders", "INSERT orders")]
    [TestCase("update orders set total = 1 where id = 2", "UPDATE", "orders", "UPDATE orders")]
    [TestCase("delete from only orders where id = 2", "DELETE", "orders", "DELETE orders")]
    [TestCase("select * from orders where id = 1 for update", "SELECT", "orders", "SELECT orders")]
    [TestCase("insert into orders values (1) on conflict (id) do update set total = 2", "INSERT", "orders", "INSERT orders")]
    [TestCase("drop table if exists orders", "DROP", "orders", "DROP orders")]
    [TestCase("create table if not exists orders (id bigint)", "CREATE", "orders", "CREATE orders")]
    [TestCase("COPY orders (customer_id, id) FROM STDIN (FORMAT BINARY)", "COPY", "orders", "COPY orders")]
    [TestCase("-- from comments\n/* from nothing */ select 'from strings' from orders", "SELECT", "orders", "SELECT orders")]
    [TestCase("with recent as (select * from orders) select * from recent", "SELECT", null, "SELECT")]
    [TestCase("select * from orders o join lines l on l.order_id = o.id", "SELECT", null, "SELECT")]
    [TestCase("select * from orders, lines", "SELECT", null, "SELECT")]
    [TestCase("select * from orders o, lines l", "SELECT", null, "SELECT")]
    [TestCase("select * from (select 1) s", "SELECT", null, "SELECT")]
    [TestCase("insert into archive select * from orders", "INSERT", null, "INSERT")]
    [TestCase("select 1", "SELECT", null, "SELECT")]
    [TestCase("vacuum", "VACUUM", null, "VACUUM")]
    public void A_statement_is_summarised_as_its_operation_and_its_only_table(string sql, string operation, string? collection, string spanName)
    {
        var summary = CommandSummary.Of(sql);

        Assert.That((summary.Operation, summary.Collection, summary.SpanName), Is.EqualTo((operation, collection, spanName)));
    }

    // What a routed Query or ExecuteScalar treats as a write (primary, no read retry, fenced under a stored map), by the
    // fast path (a plain first word) and by the lexer (WITH, a comment first): both must agree with the summary.
    [TestCase("insert into orders values (1) returning id", true)]
    [TestCase("  UPDATE orders set total = 1 returning *", true)]
    [TestCase("delete from orders where id = 1 returning id", true)]
    [TestCase("merge into orders o using src s on o.id = s.id when matched then delete", true)]
    [TestCase("/* tag */ update orders set total = 1", true)]
    [TestCase("-- tag\ninsert into orders values (1)", true)]
    [TestCase("with gone as (delete from orders where id = 1 returning *) select * from gone", true)]
    [TestCase("with src as (select 1 as id) insert into orders select id from src", true)]
    [TestCase("insert into orders values (1) on conflict (id) do update set total = 2", true)]
    [TestCase("explain analyze update orders set total = 1", true)]
    [TestCase("explain (analyze, buffers) delete from orders", true)]
    [TestCase("explain update orders set total = 1", false)]
    [TestCase("explain analyze select * from orders", false)]
    [TestCase("set local lock_timeout = '5s'; update orders set total = 1 returning id", true)]
    [TestCase("select 1; delete from orders", true)]
    [TestCase("select 1; select 'x; delete'", false)]
    [TestCase("select * from orders;", false)]
    [TestCase("select * from orders where id = 1", false)]
    [TestCase("select * from orders where id = 1 for update", false)]
    [TestCase("with locked as (select * from orders for no key update) select * from locked", false)]
    [TestCase("with recent as (select * from orders) select * from recent", false)]
    [TestCase("select 'update', \"delete\" from orders", false)]
    [TestCase("select updated_at, inserted from orders", false)]
    [TestCase("updates", false)]
    [TestCase("vacuum orders", false)]
    [TestCase("create index concurrently on orders (id)", false)]
    [TestCase("call archive_orders()", false)]
    [TestCase("", false)]
    [TestCase(null, false)]
    public void A_statement_changes_data_when_it_inserts_updates_deletes_or_merges_rows(string? sql, bool changes)
    {
        Assert.That(WriteFence.ChangesData(sql), Is.EqualTo(changes));
        Assert.That(CommandSummary.Of(sql).ChangesData, Is.EqualTo(changes));
    }

    [TestCase(null)]
    [TestCase("")]
    [TestCase("   ")]
    [TestCase("-- only a comment")]
    [TestCase("'just a string'")]
    public void Text_without_a_keyword_is_named_after_the_database_system(string? sql)
    {
        var summary = CommandSummary.Of(sql);

        Assert.That((summary.Operation, summary.Collection, summary.SpanName), Is.EqualTo(((string?)null, (string?)null, "postgresql")));
    }

    [Test]
    public void The_same_text_is_summarised_once()
    {
        const string sql = "select * from cached_once where id = @Id";

        var first = CommandSummary.Of(sql);

        Assert.That(CommandSummary.Of(sql), Is.SameAs(first));
    }

    [TestCase("Host=db0;Port=5433;Database=app;Username=u;Password=p", "app", "db0", 5433)]
    [TestCase("Host=db0;Username=appuser", "appuser", "db0", 5432)]
    [TestCase("Host=db0:6000,db1:6001;Database=app", "app", "db0", 6000)]
    [TestCase("Host=db0,db1;Port=6432;Database=app", "app", "db0", 6432)]
    public void A_shards_endpoint_is_read_from_its_connection_string(string connectionString, string database, string address, int port)
    {
        var endpoint = ShardEndpoint.From(connectionString);

        Assert.That(endpoint, Is.EqualTo(new ShardEndpoint(database, address, port)));
    }

    [Test]
    public void A_malformed_connection_string_gives_an_empty_endpoint_not_an_exception()
    {
        Assert.That(ShardEndpoint.From("Host=db0;Port=notaport"), Is.EqualTo(new ShardEndpoint(null, null, 5432)));
    }
}


namespace ShardKit.Tests.Merging;

/// <summary>
/// The lexer finds clauses only at a statement's top level, never inside text, comments or parentheses, but for those
/// around a whole query or a set operation's branch.
/// </summary>
public sealed class SqlShapeTests
{
    [TestCase("select * from orders")]
    [TestCase("select * from orders where customer_id = @CustomerId and id = any(@Ids)")]
    [TestCase("select * from (select * from orders order by id desc limit 3) t")]
    [TestCase("with recent as (select * from orders order by id desc limit 3) select * from recent")]
    [TestCase("with recursive r(n) as (select 1 union select n + 1 from r where n < 3) select * from r")]
    [TestCase("select id, count(*) over (partition by status order by id) from orders")]
    [TestCase("select id, sum(total) filter (where total > 0) over w from orders window w as (order by id)")]
    [TestCase("select id, rank() over (order by total desc) from orders")]
    [TestCase("select * from orders where note = 'order by id limit 3'")]
    [TestCase("select * from orders where note = 'it''s order by x' and a = 'b'")]
    [TestCase("select * from orders where note = E'it\\'s order by x'")]
    [TestCase("select * from orders where note = e'\\\\' and b = 'limit'")]
    [TestCase("select \"order by\", \"limit\", \"count\"(x) from orders")]
    [TestCase("select \"a\"\"order by\" from orders")]
    [TestCase("select U&\"d\\0061t\\+000061\" from orders where n = U&'limit'")]
    [TestCase("select $$ order by x limit 1 $$ from orders")]
    [TestCase("select $body$ it's order by $$ limit $body$ from orders")]
    [TestCase("select $1 from orders where id = $2")]
    [TestCase("select a$b, x from orders")]
    [TestCase("select * from orders -- order by id limit 3\nwhere id > 0")]
    [TestCase("select * from orders /* order by /* nested */ limit 3 */ where id > 0")]
    [TestCase("select * from orders where a is distinct from b and c is not distinct from d")]
    [TestCase("select * from orders where id in (select max(id) from orders group by status having count(*) > 1)")]
    [TestCase("select x from a union all select x from b")]
    [TestCase("select * from orders limit all")]
    [TestCase("select count, sum, max from stats")]
    [TestCase("select @Limit, @Offset from orders where x = @Order")]
    [TestCase("select array_agg(x order by y) over () from orders")]
    [TestCase("select percentile_cont(0.5) within group (order by total) over (partition by status) from orders")]
    [TestCase("select 1e10, 0x1F from orders")]
    [TestCase("(select x from a) union all (select x from b)")]
    [TestCase("select x from a union all (select x from b) ")]
    [TestCase("select * from orders where id in ((select max(id) from a), 1)")]
    [TestCase("select (select x from a order by x limit 1) from orders")]
    [TestCase("insert into log (x) (select x from a)")]
    public void Statements_that_every_shard_answers_alike_need_no_plan(string sql)
    {
        Assert.That(SqlShape.Analyse(sql).ToString(), Is.EqualTo("None"));
    }

    [TestCase("select * from orders order by id desc limit 3", "OrderBy, Limit")]
    [TestCase("SELECT * FROM orders ORDER\n  BY id", "OrderBy")]
    [TestCase("select * from orders order /* c */ by id", "OrderBy")]
    [TestCase("select * from orders limit @Take", "Limit")]
    [TestCase("select * from orders offset 10", "Offset")]
    [TestCase("select * from orders fetch first 5 rows only", "Limit")]
    [TestCase("select * from orders order by id offset 5 rows fetch next 5 rows only", "OrderBy, Limit, Offset")]
    [TestCase("select distinct status from orders", "Distinct")]
    [TestCase("select distinct on (status) * from orders", "Distinct")]
    [TestCase("select x from a union select x from b", "Distinct")]
    [TestCase("select x from a except select x from b", "Distinct")]
    [TestCase("select status, count(*) from orders group by status", "GroupBy, Aggregate")]
    [TestCase("select status from orders group by status having status <> 'x'", "GroupBy, Having")]
    [TestCase("select count(*) from orders", "Aggregate")]
    [TestCase("select Max(total), min(total) from orders", "Aggregate")]
    [TestCase("select pg_catalog.sum(total) from orders", "Aggregate")]
    [TestCase("select count (*) filter (where total > 0) from orders", "Aggregate")]
    [TestCase("select percentile_cont(0.5) within group (order by total) from orders", "Aggregate")]
    [TestCase("select string_agg(status, ',' order by id) from orders", "Aggregate")]
    [TestCase("select sum(total) + 1 from orders where note = 'x' -- comment", "Aggregate")]
    [TestCase("with x as (select * from orders order by id) select * from x order by id", "OrderBy")]
    [TestCase("with x as materialized (select 1) select * from x limit 3", "Limit")]
    [TestCase("select (select 1) as one from orders order by id", "OrderBy")]
    [TestCase("select $$)$$, x from orders order by x", "OrderBy")]
    [TestCase("select ')' from orders order by x", "OrderBy")]
    [TestCase("select \")\" from orders order by x", "OrderBy")]
    [TestCase("select x from orders /* ) */ order by x", "OrderBy")]
    [TestCase("select x from orders -- )\norder by x", "OrderBy")]
    [TestCase("select E'\\')' from orders order by x", "OrderBy")]
    [TestCase("select 'a' 'b' from orders order by x", "OrderBy")]
    [TestCase("(select customer_id from t order by customer_id limit 3)", "OrderBy, Limit")]
    [TestCase("((select x from t offset 2))", "Offset")]
    [TestCase("(select id from t order by id limit 2) union all (select id from t order by id desc limit 2)", "OrderBy, Limit")]
    [TestCase("select x from a union all (select x from b limit 1)", "Limit")]
    [TestCase("select x from a intersect all (select count(*) from b)", "Aggregate")]
    [TestCase("select 1; (select x from t limit 1)", "Limit")]
    public void Top_level_clauses_are_found(string sql, string expected)
    {
        Assert.That(SqlShape.Analyse(sql).ToString(), Is.EqualTo(expected));
    }

    [Test]
    public void Unterminated_text_does_not_throw()
    {
        foreach (var sql in new[] { "select 'abc", "select \"abc", "select $$abc", "select /* abc", "select E'abc\\", "select (((", "select )))", "select $", "select @", "" })
        {
            Assert.That(() => SqlShape.Analyse(sql), Throws.Nothing, sql);
        }
    }

    [Test]
    public void The_same_text_is_analysed_once()
    {
        const string sql = "select * from orders order by id limit 7 -- cached";
        Assert.That(SqlShape.Of(sql).ToString(), Is.EqualTo("OrderBy, Limit"));
        Assert.That(SqlShape.Of(new string(sql.AsSpan())).ToString(), Is.EqualTo("OrderBy, Limit"));
    }
}

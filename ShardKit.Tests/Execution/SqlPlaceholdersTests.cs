namespace ShardKit.Tests.Execution;

public sealed class SqlPlaceholdersTests
{
    private static string? Rewrite(string sql, params string[] known) =>
        SqlPlaceholders.ToPositional(sql, name => Array.FindIndex(known, k => string.Equals(k, name, StringComparison.OrdinalIgnoreCase)) + 1);

    [TestCase("insert into t values (@A, @b, @A)", "insert into t values ($1, $2, $1)")]
    [TestCase("select :A::int, x::text from t", "select $1::int, x::text from t")]
    [TestCase("select '@A', \"@A\", E'\\'@A', $$ @A $$, $q$ @A $q$ -- @A\n, /* /* @A */ @A */ @A", "select '@A', \"@A\", E'\\'@A', $$ @A $$, $q$ @A $q$ -- @A\n, /* /* @A */ @A */ $1")]
    [TestCase("select @Unknown, @A, a@>b, arr[1:A], email@A", "select @Unknown, $1, a@>b, arr[1:A], email@A")]
    [TestCase("insert into t values (@A);  ", "insert into t values ($1);  ")]
    public void Named_placeholders_become_positional_outside_quotes_comments_and_casts(string sql, string expected)
    {
        Assert.That(Rewrite(sql, "A", "B"), Is.EqualTo(expected));
    }

    [TestCase("insert into t values (@A); insert into u values (@A)")]
    [TestCase("select 1; select 2")]
    public void Several_statements_in_one_text_are_left_to_the_per_row_path(string sql)
    {
        Assert.That(Rewrite(sql, "A"), Is.Null);
    }

    [Test]
    public void A_semicolon_inside_a_string_is_not_a_second_statement()
    {
        Assert.That(Rewrite("insert into t values (@A, ';x')", "A"), Is.EqualTo("insert into t values ($1, ';x')"));
    }
}

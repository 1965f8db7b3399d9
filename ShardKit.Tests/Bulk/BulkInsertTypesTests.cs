namespace ShardKit.Tests.Bulk;

/// <summary>
/// Values round-trip through binary COPY with the column's own type: enums as their name into text and as their
/// value into integers, <see cref="DateTimeOffset"/> as its UTC instant, nulls from nullable and reference types.
/// </summary>
public sealed class BulkInsertTypesTests
{
    private const string Ddl = """
        create table {0} (tenant uuid not null, id bigint not null, small integer not null, big bigint not null, name text not null,
          price numeric(12,2) not null, at timestamptz not null, local_at timestamp not null, seen timestamptz not null,
          flag boolean not null, maybe integer, note text, mood_text text not null, mood_number integer not null)
        """;

    public enum Mood
    {
        Calm = 1,
        Angry = 2,
    }

    public sealed class Sample
    {
        [ShardKey] public Guid Tenant { get; init; }

        public long Id { get; init; }

        public int Small { get; init; }

        public long Big { get; init; }

        public string Name { get; init; } = "";

        public decimal Price { get; init; }

        public DateTime At { get; init; }

        public DateTime LocalAt { get; init; }

        public DateTimeOffset Seen { get; init; }

        public bool Flag { get; init; }

        public int? Maybe { get; init; }

        public string? Note { get; init; }

        public Mood MoodText { get; init; }

        public Mood MoodNumber { get; init; }
    }

    public sealed class SampleBack
    {
        public Guid Tenant { get; init; }

        public long Id { get; init; }

        public int Small { get; init; }

        public long Big { get; init; }

        public string Name { get; init; } = "";

        public decimal Price { get; init; }

        public DateTime At { get; init; }

        public DateTime LocalAt { get; init; }

        public DateTime Seen { get; init; }

        public bool Flag { get; init; }

        public int? Maybe { get; init; }

        public string? Note { get; init; }

        public string MoodText { get; init; } = "";

        public int MoodNumber { get; init; }
    }

    [Test]
    public async Task Every_supported_type_round_trips_and_lands_by_its_guid_key()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = Enumerable.Range(0, 2000).Select(Make).ToList();

        var result = await db.BulkInsertAsync(ctx.Table, rows);

        Assert.That(result.Total, Is.EqualTo(rows.Count));
        var back = new Dictionary<long, (string Shard, SampleBack Row)>();
        foreach (var shard in ctx.Shards.Names)
        {
            foreach (var row in await ctx.DirectAsync<SampleBack>(shard, $"select * from {ctx.Table}"))
            {
                back.Add(row.Id, (shard, row));
            }
        }

        Assert.That(back, Has.Count.EqualTo(rows.Count));
        foreach (var expected in rows)
        {
            var (shard, actual) = back[expected.Id];
            Assert.That(shard, Is.EqualTo(ctx.Source.ShardFor(expected.Tenant)), $"row {expected.Id}");
            Assert.That(actual.Tenant, Is.EqualTo(expected.Tenant));
            Assert.That((actual.Small, actual.Big, actual.Name, actual.Price, actual.Flag),
                Is.EqualTo((expected.Small, expected.Big, expected.Name, expected.Price, expected.Flag)));
            Assert.That(actual.At, Is.EqualTo(expected.At));
            Assert.That(actual.LocalAt, Is.EqualTo(expected.LocalAt));
            Assert.That(actual.Seen, Is.EqualTo(expected.Seen.UtcDateTime), "a DateTimeOffset keeps its instant");
            Assert.That(actual.Maybe, Is.EqualTo(expected.Maybe));
            Assert.That(actual.Note, Is.EqualTo(expected.Note));
            Assert.That(actual.MoodText, Is.EqualTo(expected.MoodText.ToString()), "an enum into text is its name");
            Assert.That(actual.MoodNumber, Is.EqualTo((int)expected.MoodNumber), "an enum into an integer is its value");
        }
    }

    [Test]
    public async Task A_utc_DateTime_into_a_timestamp_without_time_zone_is_refused_with_its_row_and_property()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var rows = Enumerable.Range(0, 3000).Select(i => i == 2345 ? With(Make(i), localAt: DateTime.UtcNow) : Make(i));

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, new BulkInsertOptions { BatchSize = 100 }));

        Assert.That(error!.RowIndex, Is.EqualTo(2345));
        Assert.That(error.Property, Is.EqualTo(nameof(Sample.LocalAt)));
        Assert.That(error.Message, Does.Contain("Row 2345").And.Contain("LocalAt").And.Contain("local_at"));
        Assert.That(error.RolledBackShards, Is.EquivalentTo(ctx.Shards.Names));
        Assert.That(error.CommittedShards, Is.Empty);
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    [Test]
    public async Task A_local_DateTime_into_a_timestamptz_is_refused_with_its_row_and_property()
    {
        await using var ctx = await ShardTestContext.CreateAsync(Ddl, stem: "bulk");
        await using var db = ctx.Source.CreateConnection();
        var local = new DateTime(2024, 5, 1, 8, 0, 0, DateTimeKind.Local);
        var rows = Enumerable.Range(0, 3000).Select(i => i == 1717 ? With(Make(i), at: local) : Make(i));

        var error = Assert.ThrowsAsync<BulkInsertException>(async () => await db.BulkInsertAsync(ctx.Table, rows, new BulkInsertOptions { BatchSize = 100 }));

        Assert.That((error!.RowIndex, error.Property), Is.EqualTo(((long?)1717, nameof(Sample.At))));
        Assert.That(await BulkChecks.TotalAsync(ctx), Is.Zero);
    }

    private static Sample Make(int i) => new()
    {
        Tenant = new Guid(i, 7, 11, 1, 2, 3, 4, 5, 6, 7, 8),
        Id = i,
        Small = -i,
        Big = (long)i << 33,
        Name = $"name-{i}-ü",
        Price = i + 0.25m,
        At = DateTime.SpecifyKind(new DateTime(2024, 1, 1).AddMinutes(i), DateTimeKind.Utc),
        LocalAt = new DateTime(2023, 6, 1).AddSeconds(i),
        Seen = new DateTimeOffset(2024, 1, 1, 12, 0, 0, TimeSpan.FromHours(2)).AddMinutes(i),
        Flag = i % 2 == 0,
        Maybe = i % 2 == 0 ? null : i,
        Note = i % 3 == 0 ? null : "note",
        MoodText = i % 2 == 0 ? Mood.Calm : Mood.Angry,
        MoodNumber = i % 3 == 0 ? Mood.Angry : Mood.Calm,
    };

    private static Sample With(Sample s, DateTime? at = null, DateTime? localAt = null) => new()
    {
        Tenant = s.Tenant, Id = s.Id, Small = s.Small, Big = s.Big, Name = s.Name, Price = s.Price, At = at ?? s.At,
        LocalAt = localAt ?? s.LocalAt, Seen = s.Seen, Flag = s.Flag, Maybe = s.Maybe, Note = s.Note, MoodText = s.MoodText,
        MoodNumber = s.MoodNumber,
    };
}

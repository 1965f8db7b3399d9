namespace ShardKit;

/// <summary>
/// The average PostgreSQL's <c>avg(numeric)</c> returns: the sum over the count, rounded half away from zero to the
/// display scale its numeric division chooses (<c>select_div_scale</c> in numeric.c): at least 16 significant digits,
/// and never fewer decimals than the sum has. So 1.00, 2.00, 2.00 average to 1.6666666666666667, not to 28 digits.
/// </summary>
internal static class NumericAverage
{
    private const int MinSignificantDigits = 16; // NUMERIC_MIN_SIG_DIGITS
    private const int DigitsPerWord = 4; // DEC_DIGITS: numeric stores base-10000 words
    private const int MaxDecimalScale = 28;

    public static decimal Of(decimal sum, long count)
    {
        var (sumWeight, sumFirst) = Words(Math.Abs(sum));
        var (countWeight, countFirst) = Words(count);
        // PostgreSQL's estimate of the quotient's weight, in base-10000 words.
        var quotientWeight = sumWeight - countWeight - (sumFirst <= countFirst ? 1 : 0);
        var scale = Math.Max(MinSignificantDigits - (quotientWeight * DigitsPerWord), sum.Scale);
        scale = Math.Clamp(scale, 0, MaxDecimalScale);
        var average = Math.Round(sum / count, scale, MidpointRounding.AwayFromZero);
        return average + new decimal(0, 0, 0, false, (byte)scale); // trailing zeros up to the scale, as PostgreSQL shows them
    }

    /// <summary>The weight of the first non-zero base-10000 word of a non-negative value, and that word.</summary>
    private static (int Weight, decimal First) Words(decimal value)
    {
        if (value == 0)
        {
            return (0, 0);
        }

        var weight = 0;
        for (; value >= 10000; weight++)
        {
            value /= 10000;
        }

        for (; value < 1; weight--)
        {
            value *= 10000;
        }

        return (weight, decimal.Truncate(value));
    }
}

//! Money and fee arithmetic for the sandbox: parsing and formatting decimal strings, and the
//! pricing quote of a cash-in.
//!
//! Everything is integer arithmetic: amounts are whole cents, rates are parts per million. Floats
//! never touch money, so the guide's worked example ($200, developer 1% + $1.00, OMS 2% + $1.00 →
//! fees $8.00, 192.00 delivered, effective rate 0.9600) comes out exactly, every time.

// Cents are written dollars_cents on purpose: `200_00` reads as $200.00.
#![allow(clippy::inconsistent_digit_grouping)]

/// An amount of money in whole cents (USD or a USD stablecoin, always at 1.0000).
pub(crate) type Cents = i64;

/// A rate in parts per million: `"0.01"` is `10_000`.
pub(crate) type Ppm = i64;

/// The largest cash load the provider accepts: the `max_transaction` the guide documents for the
/// provider of its example ($500.00), which the sandbox models. No OMS page states a minimum
/// (an amount too small to carry its fees is refused by that rule instead), nor another
/// retailer's limit: a larger one is not modelled.
pub(crate) const MAX_AMOUNT: Cents = 500_00;
/// What OMS assumes for the estimate when the request gives no `indicatedAmount`.
pub(crate) const DEFAULT_INDICATED: Cents = 100_00;

/// OMS's own fee: 2% plus $1.00. The guide's `omsFeeSchedule` example says $3.00 fixed, but its
/// worked fee table (the one numbers are checked against) uses $1.00; the table wins.
pub(crate) const OMS_PERCENT: Ppm = 20_000;
pub(crate) const OMS_FIXED: Cents = 1_00;

const PPM: i64 = 1_000_000;
/// Bounds the digits we accept so no product below can overflow an `i64`.
const MAX_INTEGER_DIGITS: usize = 12;
const MAX_RATE_FRACTION_DIGITS: usize = 6;

/// Why a decimal string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecimalError {
    /// Not a plain decimal (`"12"`, `"12.5"`, `"12.50"`), or too many fraction digits.
    Format,
    /// Too many integer digits to be a sensible amount.
    TooLarge,
}

/// Parses a plain non-negative decimal with at most two fraction digits into cents.
///
/// Signs, exponents, spaces, a bare `"."` and a trailing `"12."` are all refused: OMS amounts are
/// strings precisely so that nobody has to guess how a number was written.
pub(crate) fn parse_money(s: &str) -> Result<Cents, DecimalError> {
    let (int, frac) = split_decimal(s, 2)?;
    let frac_cents = match frac.len() {
        0 => 0,
        1 => digit_value(frac)? * 10,
        _ => digit_value(frac)?,
    };
    Ok(int * 100 + frac_cents)
}

/// Parses a plain non-negative decimal rate with at most six fraction digits into ppm.
pub(crate) fn parse_rate(s: &str) -> Result<Ppm, DecimalError> {
    let (int, frac) = split_decimal(s, MAX_RATE_FRACTION_DIGITS)?;
    let mut frac_ppm = digit_value(frac)?;
    for _ in frac.len()..MAX_RATE_FRACTION_DIGITS {
        frac_ppm *= 10;
    }
    int.checked_mul(PPM)
        .and_then(|v| v.checked_add(frac_ppm))
        .ok_or(DecimalError::TooLarge)
}

/// Splits `"123.45"` into (123, "45"), enforcing the plain-decimal shape.
fn split_decimal(s: &str, max_fraction: usize) -> Result<(i64, &str), DecimalError> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => {
            if frac.is_empty() {
                return Err(DecimalError::Format);
            }
            (int, frac)
        }
        None => (s, ""),
    };
    if int.is_empty() || frac.len() > max_fraction {
        return Err(DecimalError::Format);
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecimalError::Format);
    }
    let significant = int.trim_start_matches('0');
    if significant.len() > MAX_INTEGER_DIGITS {
        return Err(DecimalError::TooLarge);
    }
    Ok((digit_value(int)?, frac))
}

/// The value of an all-digit string (already checked), bounded by the caller's digit limits.
fn digit_value(digits: &str) -> Result<i64, DecimalError> {
    digits.bytes().try_fold(0i64, |acc, b| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or(DecimalError::TooLarge)
    })
}

/// `19200` → `"192.00"`.
pub(crate) fn format_cents(cents: Cents) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// `10_000` → `"0.01"`, `15_000` → `"0.015"`: at least two fraction digits, no trailing noise.
pub(crate) fn format_rate(ppm: Ppm) -> String {
    let abs = ppm.unsigned_abs();
    let sign = if ppm < 0 { "-" } else { "" };
    let mut frac = format!("{:06}", abs % PPM.unsigned_abs());
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}{}.{frac}", abs / PPM.unsigned_abs())
}

/// A rate with four fraction digits, as `rates.*` are written: `9_600` → `"0.9600"`.
pub(crate) fn format_rate4(ten_thousandths: i64) -> String {
    let sign = if ten_thousandths < 0 { "-" } else { "" };
    let abs = ten_thousandths.unsigned_abs();
    format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000)
}

/// `cents × ppm / 1e6`, rounded half up to whole cents (inputs are non-negative).
fn percent_of(amount: Cents, rate: Ppm) -> Cents {
    let exact = i128::from(amount) * i128::from(rate);
    let rounded = (exact + i128::from(PPM / 2)).div_euclid(i128::from(PPM));
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

/// One developer fee's terms: a percentage, a flat amount, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FeeTerms {
    pub(crate) percentage: Option<Ppm>,
    pub(crate) flat: Option<Cents>,
}

/// The priced view of an amount: what the customer pays, what each party takes, what arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quote {
    pub(crate) amount: Cents,
    pub(crate) developer: Cents,
    pub(crate) oms: Cents,
    pub(crate) total: Cents,
    /// What is left after fees, on the source side; at 1.0000 also what the destination receives.
    pub(crate) net: Cents,
    /// Each developer fee entry's computed amount, in request order.
    pub(crate) per_fee: Vec<Cents>,
    /// net / amount in ten-thousandths, rounded half up.
    pub(crate) effective_rate: i64,
}

/// Prices `amount` with the given developer fees and OMS's schedule.
///
/// The developer fee is Σ percentage × amount (rounded once, so many small percentages do not
/// each round up) plus Σ flat; the OMS fee is 2% × amount rounded, plus $1.00. Each entry's own
/// amount is its share of that total (see [`allocate`]), so the entries add up to it.
pub(crate) fn quote(amount: Cents, fees: &[FeeTerms]) -> Quote {
    let percentage_sum: Ppm = fees
        .iter()
        .filter_map(|f| f.percentage)
        .fold(0, |acc: Ppm, p| acc.saturating_add(p));
    let flat_sum: Cents = fees
        .iter()
        .filter_map(|f| f.flat)
        .fold(0, |acc: Cents, c| acc.saturating_add(c));
    let percentage_total = percent_of(amount, percentage_sum);
    let developer = percentage_total.saturating_add(flat_sum);
    let oms = percent_of(amount, OMS_PERCENT).saturating_add(OMS_FIXED);
    let total = developer.saturating_add(oms);
    let net = amount.saturating_sub(total);
    let per_fee = allocate(amount, fees, percentage_total);
    let effective_rate = if amount > 0 {
        let scaled = i128::from(net) * 10_000 * 2 + i128::from(amount);
        i64::try_from(scaled.div_euclid(2 * i128::from(amount))).unwrap_or(0)
    } else {
        0
    };
    Quote {
        amount,
        developer,
        oms,
        total,
        net,
        per_fee,
        effective_rate,
    }
}

/// Each entry's amount: its flat fee plus its share of `percentage_total` (the percentages'
/// total, rounded once), shared by the largest-remainder method: every entry gets the whole
/// cents of its exact share, and the cents the rounding of the total adds go one each to the
/// entries with the largest fractions of a cent (the earlier entry first on a tie). So the
/// entries always add up to the total: $21.00 with 2 × 0.25 % is 0.06 + 0.05 = 0.11, not
/// 0.05 + 0.05 against a total of 0.11.
fn allocate(amount: Cents, fees: &[FeeTerms], percentage_total: Cents) -> Vec<Cents> {
    let ppm = i128::from(PPM);
    // (whole cents, remainder in millionths of a cent) of each entry's exact percentage share.
    let shares: Vec<(Cents, i128)> = fees
        .iter()
        .map(|f| {
            let exact = i128::from(amount) * i128::from(f.percentage.unwrap_or(0));
            let whole = i64::try_from(exact.div_euclid(ppm)).unwrap_or(i64::MAX);
            (whole, exact.rem_euclid(ppm))
        })
        .collect();
    let floors: Cents = shares
        .iter()
        .fold(0, |acc: Cents, (whole, _)| acc.saturating_add(*whole));
    let mut left = usize::try_from(percentage_total.saturating_sub(floors)).unwrap_or(0);
    let mut order: Vec<usize> = (0..shares.len()).collect();
    // Stable: equal remainders keep request order.
    order.sort_by(|&a, &b| shares[b].1.cmp(&shares[a].1));
    let mut per_fee: Vec<Cents> = shares.iter().map(|(whole, _)| *whole).collect();
    for i in order {
        if left == 0 || shares[i].1 == 0 {
            break;
        }
        per_fee[i] += 1;
        left -= 1;
    }
    per_fee
        .iter()
        .zip(fees)
        .map(|(share, f)| share.saturating_add(f.flat.unwrap_or(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_worked_example_200_with_one_percent_plus_one_dollar() {
        let fees = [
            FeeTerms {
                percentage: Some(10_000),
                flat: None,
            },
            FeeTerms {
                percentage: None,
                flat: Some(1_00),
            },
        ];
        let q = quote(200_00, &fees);
        assert_eq!(format_cents(q.developer), "3.00");
        assert_eq!(format_cents(q.oms), "5.00");
        assert_eq!(format_cents(q.total), "8.00");
        assert_eq!(format_cents(q.net), "192.00");
        assert_eq!(format_rate4(q.effective_rate), "0.9600");
        assert_eq!(q.per_fee, vec![2_00, 1_00]);
    }

    #[test]
    fn default_amount_without_developer_fees() {
        let q = quote(DEFAULT_INDICATED, &[]);
        assert_eq!(format_cents(q.oms), "3.00");
        assert_eq!(format_cents(q.developer), "0.00");
        assert_eq!(format_cents(q.net), "97.00");
        assert_eq!(format_rate4(q.effective_rate), "0.9700");
    }

    #[test]
    fn percentages_round_half_up_to_cents() {
        // 2% of 20.25 is 0.405 → 0.41; 0.5% of 20.25 is 0.10125 → 0.10.
        assert_eq!(percent_of(20_25, 20_000), 41);
        assert_eq!(percent_of(20_25, 5_000), 10);
        // Effective rate rounds half up too: $3.00 nets 1.94, and 194 / 300 = 0.64666… → 0.6467.
        let q = quote(300, &[]);
        assert_eq!(q.net, 300 - 6 - 100);
        assert_eq!(format_rate4(q.effective_rate), "0.6467");
    }

    #[test]
    fn entry_amounts_add_up_to_the_developer_total() {
        let quarter = FeeTerms {
            percentage: Some(2_500),
            flat: None,
        };
        // $21.00 × 0.25 % = 0.0525 each; the total 0.105 rounds to 0.11, so one entry is 0.06.
        let q = quote(21_00, &[quarter, quarter]);
        assert_eq!(q.developer, 11);
        assert_eq!(q.per_fee, vec![6, 5]);
        // The larger fraction gets the cent, whatever the order; flat fees ride along.
        let mixed = [
            FeeTerms {
                percentage: Some(1_000),
                flat: Some(1_00),
            },
            FeeTerms {
                percentage: Some(4_000),
                flat: None,
            },
        ];
        let q = quote(12_34, &mixed);
        // Exact shares 1.234 and 4.936 cents; total 6.17 → 6; floors 1 + 4 = 5; +1 to the second.
        assert_eq!(q.per_fee, vec![1_01, 5]);
        assert_eq!(q.per_fee.iter().sum::<Cents>(), q.developer);
        for amount in [1, 99, 20_25, 21_00, 333_33, 499_99] {
            let fees = [quarter, quarter, quarter, mixed[0], mixed[1]];
            let q = quote(amount, &fees);
            assert_eq!(q.per_fee.iter().sum::<Cents>(), q.developer, "{amount}");
        }
    }

    #[test]
    fn money_accepts_plain_decimals() {
        assert_eq!(parse_money("200.00"), Ok(200_00));
        assert_eq!(parse_money("200"), Ok(200_00));
        assert_eq!(parse_money("200.5"), Ok(200_50));
        assert_eq!(parse_money("0.07"), Ok(7));
        assert_eq!(parse_money("0200.10"), Ok(200_10));
    }

    #[test]
    fn money_refuses_everything_else() {
        for bad in [
            "", ".", ".5", "5.", "-1.00", "+1.00", "1e2", " 1.00", "1.00 ", "1.001", "1,00", "١٢",
            "NaN", "inf", "1.0.0", "0x10",
        ] {
            assert_eq!(parse_money(bad), Err(DecimalError::Format), "{bad:?}");
        }
        assert_eq!(
            parse_money("99999999999999999999999.00"),
            Err(DecimalError::TooLarge)
        );
    }

    #[test]
    fn rates_parse_to_ppm_and_format_back() {
        assert_eq!(parse_rate("0.01"), Ok(10_000));
        assert_eq!(parse_rate("0.015"), Ok(15_000));
        assert_eq!(parse_rate("0.000001"), Ok(1));
        assert_eq!(parse_rate("1"), Ok(1_000_000));
        assert_eq!(parse_rate("0.0000001"), Err(DecimalError::Format));
        assert_eq!(format_rate(10_000), "0.01");
        assert_eq!(format_rate(15_000), "0.015");
        assert_eq!(format_rate(0), "0.00");
        assert_eq!(format_rate(1), "0.000001");
    }

    #[test]
    fn formatting_cents() {
        assert_eq!(format_cents(0), "0.00");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(19_200), "192.00");
        assert_eq!(format_cents(-150), "-1.50");
    }
}

//! Subscription rules that need no database: statuses, period arithmetic and the exact
//! proration of a plan change.
//!
//! Periods are counted from an anchor instant (the subscription's start, or the instant
//! an interval change reset it), truncated to the second: the n-th boundary is the
//! anchor plus n × interval months, the day clamped to the month's end (Jan 31 → Feb 28
//! → Mar 31), as Stripe does. Proration works in whole seconds: the unused fraction of
//! a period at instant `t` is `(end − t) / (end − start)` with `t` truncated to the
//! second, and each prorated amount is `price × fraction` rounded half-up to the
//! currency's minor unit (computed exactly in integers).

use std::str::FromStr;

use chrono::Months;

use crate::domain::{clock::from_micros, money::Currency, org::stored_enum, plans::Interval};

/// Microseconds per second.
pub const SECOND: i64 = 1_000_000;

stored_enum! {
    /// The state of a subscription.
    SubStatus {
        Trialing => "TRIALING",
        Active => "ACTIVE",
        PastDue => "PAST_DUE",
        Canceled => "CANCELED",
    }
}

stored_enum! {
    /// How an add-on purchase is paid.
    PaymentSource { Credits => "CREDITS", Gateway => "GATEWAY" }
}

stored_enum! {
    /// The state of an add-on purchase.
    PurchaseStatus {
        Pending => "PENDING",
        Active => "ACTIVE",
        Failed => "FAILED",
        Canceled => "CANCELED",
    }
}

stored_enum! {
    /// The state of a service agreement.
    AgreementStatus {
        Active => "ACTIVE",
        Revoked => "REVOKED",
        Superseded => "SUPERSEDED",
    }
}

/// `micros` truncated to the whole second (towards the past).
pub fn to_second(micros: i64) -> i64 {
    micros.div_euclid(SECOND) * SECOND
}

/// The instant `months` months after `anchor` (day clamped to the month's end); `None`
/// beyond the calendar.
pub fn add_months(anchor: i64, months: u32) -> Option<i64> {
    from_micros(anchor)
        .checked_add_months(Months::new(months))
        .map(|t| t.timestamp_micros())
}

/// The first period boundary strictly after `after`, counting whole intervals from
/// `anchor` (`after` ≥ `anchor`): the end of the period that starts at (or contains)
/// `after`. `None` beyond the calendar.
pub fn next_boundary(anchor: i64, interval: Interval, after: i64) -> Option<i64> {
    let step = interval.months();
    // Start near the answer: whole months between anchor and `after`, rounded down to
    // a multiple of the interval; then walk forward (at most a couple of steps).
    let (a, b) = (from_micros(anchor), from_micros(after.max(anchor)));
    let months = {
        use chrono::Datelike;
        let m = (b.year() - a.year()) * 12 + b.month() as i32 - a.month() as i32;
        u32::try_from(m.max(1) - 1).unwrap_or(0)
    };
    let mut n = months / step;
    loop {
        let boundary = add_months(anchor, n.checked_mul(step)?)?;
        if boundary > after {
            return Some(boundary);
        }
        n = n.checked_add(1)?;
    }
}

/// `price × remaining / total` seconds of the period `[start, end)` at instant `at`,
/// rounded half-up to `currency`'s minor unit, in micro-units. `at` is truncated to
/// the second and clamped into the period; an empty period prorates to zero.
pub fn prorate(price_micros: i64, start: i64, end: i64, at: i64, currency: Currency) -> i64 {
    let total = (end - start).div_euclid(SECOND);
    if total <= 0 || price_micros == 0 {
        return 0;
    }
    let at = to_second(at).clamp(start, end);
    let remaining = (end - at).div_euclid(SECOND).clamp(0, total);
    let minor = i128::from(10i64.pow(6 - currency.minor_digits()));
    let numerator = i128::from(price_micros) * i128::from(remaining);
    let denominator = i128::from(total) * minor;
    // Half-up on the magnitude (prices are never negative).
    let units = (2 * numerator + denominator).div_euclid(2 * denominator);
    i64::try_from(units * minor).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn at(y: i32, m: u32, d: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .single()
            .map(|t| t.timestamp_micros())
            .unwrap_or_default()
    }

    #[test]
    fn boundaries_clamp_to_the_end_of_short_months() {
        let anchor = at(2026, 1, 31);
        assert_eq!(
            next_boundary(anchor, Interval::Month, anchor),
            Some(at(2026, 2, 28))
        );
        assert_eq!(
            next_boundary(anchor, Interval::Month, at(2026, 2, 28)),
            Some(at(2026, 3, 31))
        );
        assert_eq!(
            next_boundary(anchor, Interval::Year, anchor),
            Some(at(2027, 1, 31))
        );
        assert_eq!(
            next_boundary(anchor, Interval::Month, at(2027, 6, 15)),
            Some(at(2027, 6, 30))
        );
    }

    #[test]
    fn proration_is_exact_to_the_minor_unit() {
        let (start, end) = (at(2026, 11, 1), at(2026, 12, 1));
        // Half of November left of 29.00 → 14.50.
        assert_eq!(
            prorate(29_000_000, start, end, at(2026, 11, 16), Currency::Usd),
            14_500_000
        );
        // One second left of 30 days of 29.00 = 0.0000111… → 0.00.
        assert_eq!(
            prorate(29_000_000, start, end, end - SECOND, Currency::Usd),
            0
        );
        assert_eq!(
            prorate(29_000_000, start, end, start, Currency::Usd),
            29_000_000
        );
        assert_eq!(prorate(29_000_000, start, end, end, Currency::Usd), 0);
        // 1/3 of 0.05 = 0.01666… → 0.02 (half-up), 2/3 → 0.0333… → 0.03.
        let third = (end - start) / 3;
        assert_eq!(
            prorate(50_000, start, end, end - third, Currency::Usd),
            20_000
        );
        assert_eq!(
            prorate(50_000, start, end, start + third, Currency::Usd),
            30_000
        );
        // Exactly half a cent rounds up: 0.01 over two seconds, one left.
        assert_eq!(
            prorate(
                10_000,
                start,
                start + 2 * SECOND,
                start + SECOND,
                Currency::Usd
            ),
            10_000
        );
    }
}

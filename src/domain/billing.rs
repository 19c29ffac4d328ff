//! Billing vocabulary: metered metrics, ledger entry kinds and states, invoice states and
//! line kinds, billing months and rounding to a currency's minor unit.

use std::str::FromStr;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::domain::{
    clock::{Micros, from_micros},
    money::{Currency, MICROS_PER_UNIT},
    org::stored_enum,
};

stored_enum! {
    /// A metered usage metric.
    Metric {
        Tokens => "TOKENS",
        Messages => "MESSAGES",
        Conversations => "CONVERSATIONS",
        Minutes => "MINUTES",
        Logs => "LOGS",
    }
}

stored_enum! {
    /// The kind of a credits ledger entry.
    TxnKind {
        Purchase => "PURCHASE",
        Gift => "GIFT",
        Credit => "CREDIT",
        Refund => "REFUND",
        Debit => "DEBIT",
        TransferIn => "TRANSFER_IN",
        TransferOut => "TRANSFER_OUT",
        InvoicePayment => "INVOICE_PAYMENT",
        ServicePurchase => "SERVICE_PURCHASE",
    }
}

stored_enum! {
    /// The state of a credits ledger entry.
    TxnStatus { Pending => "PENDING", Succeeded => "SUCCEEDED", Failed => "FAILED" }
}

stored_enum! {
    /// The state of an invoice.
    InvoiceStatus {
        Draft => "DRAFT",
        Open => "OPEN",
        Paid => "PAID",
        Void => "VOID",
        Uncollectible => "UNCOLLECTIBLE",
    }
}

stored_enum! {
    /// What an invoice line is for.
    LineKind {
        Subscription => "SUBSCRIPTION",
        ProrationCredit => "PRORATION_CREDIT",
        ProrationCharge => "PRORATION_CHARGE",
        AgentFee => "AGENT_FEE",
        Usage => "USAGE",
        Addon => "ADDON",
        OneOff => "ONE_OFF",
    }
}

/// Usage older than this (relative to now) is refused.
pub const MAX_EVENT_AGE_MICROS: Micros = 35 * 24 * 3600 * 1_000_000;
/// Usage further than this in the future is refused.
pub const MAX_EVENT_SKEW_MICROS: Micros = 5 * 60 * 1_000_000;

/// A billing month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// Year.
    pub year: i32,
    /// Month, 1-12.
    pub month: u32,
}

impl Month {
    /// The month containing a stored instant.
    pub fn of(at: Micros) -> Month {
        let t = from_micros(at);
        Month {
            year: t.year(),
            month: t.month(),
        }
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month `n` months before this one.
    pub fn minus(self, n: u32) -> Month {
        let index = self.year * 12 + self.month as i32 - 1 - n as i32;
        Month {
            year: index.div_euclid(12),
            month: index.rem_euclid(12) as u32 + 1,
        }
    }

    /// The first instant of the month.
    pub fn start(self) -> Micros {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0)
            .single()
            .map(|t| t.timestamp_micros())
            .unwrap_or_default()
    }

    /// The first instant after the month.
    pub fn end(self) -> Micros {
        self.next().start()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = String;

    /// Parses `YYYY-MM` (years 2000-9999).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("must be a month `YYYY-MM`, got {s:?}");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(2000..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }
}

/// Parses a calendar date `YYYY-MM-DD` (UTC) into the instant it starts.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("must be a date `YYYY-MM-DD`, got {s:?}"))?;
    if s.len() != 10 || !(2000..=9999).contains(&date.year()) {
        return Err(format!("must be a date `YYYY-MM-DD`, got {s:?}"));
    }
    Ok(date)
}

/// The first instant of a UTC date.
pub fn date_start(date: NaiveDate) -> Micros {
    date.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_micros())
        .unwrap_or_default()
}

/// Rounds micro-units half-up (away from zero at exactly half) to the currency's minor
/// unit, still in micro-units.
pub fn round_to_minor(micros: i64, currency: Currency) -> i64 {
    let amount = Decimal::new(micros, 6).round_dp_with_strategy(
        currency.minor_digits(),
        RoundingStrategy::MidpointAwayFromZero,
    );
    i64::try_from((amount * Decimal::from(MICROS_PER_UNIT)).trunc()).unwrap_or(i64::MAX)
}

/// Micro-units (already rounded to the minor unit) in minor units, e.g. cents.
pub fn to_minor_units(micros: i64, currency: Currency) -> i64 {
    let per_minor = MICROS_PER_UNIT / 10_i64.pow(currency.minor_digits());
    round_to_minor(micros, currency) / per_minor
}

/// `part × 100 / whole` as a decimal string with `places` decimals (half-up); empty when
/// `whole` is not positive.
pub fn percentage(part: i64, whole: i64, places: u32) -> String {
    if whole <= 0 {
        return String::new();
    }
    let value = (Decimal::from(part) * Decimal::from(100) / Decimal::from(whole))
        .round_dp_with_strategy(places, RoundingStrategy::MidpointAwayFromZero);
    let mut value = value;
    value.rescale(places);
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_print_and_step() {
        let m: Month = "2026-12".parse().unwrap();
        assert_eq!(m.next().to_string(), "2027-01");
        assert_eq!(m.minus(12).to_string(), "2025-12");
        assert_eq!(m.minus(11).to_string(), "2026-01");
        assert_eq!(Month::of(m.start()), m);
        assert_eq!(Month::of(m.end() - 1), m);
        for bad in [
            "2026-13", "2026-1", "26-01", "2026/01", "", "1999-01", "2026-00",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rounds_half_up_to_the_minor_unit() {
        assert_eq!(round_to_minor(1_005_000, Currency::Usd), 1_010_000);
        assert_eq!(round_to_minor(1_004_999, Currency::Usd), 1_000_000);
        assert_eq!(round_to_minor(-1_005_000, Currency::Usd), -1_010_000);
        assert_eq!(to_minor_units(29_000_000, Currency::Usd), 2900);
    }

    #[test]
    fn a_million_micro_amounts_sum_to_exactly_one_unit() {
        let one = crate::domain::money::to_micros(
            crate::domain::money::parse_amount("0.000001", 6, false).unwrap(),
        );
        let total: i64 = (0..1_000_000).map(|_| one).sum();
        assert_eq!(total, MICROS_PER_UNIT);
        let shown = crate::domain::money::Money::from_micros(Currency::Usd, total);
        assert_eq!(shown.amount_string(), "1.00");
        assert_eq!(to_minor_units(total, Currency::Usd), 100);
    }

    #[test]
    fn percentages_have_fixed_places() {
        assert_eq!(percentage(12450, 50000, 1), "24.9");
        assert_eq!(percentage(8, 10, 1), "80.0");
        assert_eq!(percentage(1, 3, 2), "33.33");
        assert_eq!(percentage(1, 0, 1), "");
    }
}

//! Money: `rust_decimal` amounts in one of the supported currencies, stored as integer
//! micro-units. Never a float.

use std::{fmt, str::FromStr};

use rust_decimal::Decimal;

use super::text::quoted;

/// Micro-units per unit: stored amounts are `amount × 10⁶`.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// Largest amount accepted anywhere: one trillion units.
pub const MAX_AMOUNT_UNITS: i64 = 1_000_000_000_000;

/// A supported currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    /// US dollar.
    Usd,
    /// Euro.
    Eur,
    /// Pound sterling.
    Gbp,
    /// Nigerian naira.
    Ngn,
    /// Canadian dollar.
    Cad,
    /// Australian dollar.
    Aud,
}

/// Why a value is not valid money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMoney(String);

impl fmt::Display for BadMoney {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Currency {
    /// Every supported currency.
    pub const ALL: [Currency; 6] = [
        Currency::Usd,
        Currency::Eur,
        Currency::Gbp,
        Currency::Ngn,
        Currency::Cad,
        Currency::Aud,
    ];

    /// The ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
            Currency::Gbp => "GBP",
            Currency::Ngn => "NGN",
            Currency::Cad => "CAD",
            Currency::Aud => "AUD",
        }
    }

    /// Decimal places of the minor unit (all supported currencies have 2).
    pub fn minor_digits(self) -> u32 {
        2
    }
}

impl FromStr for Currency {
    type Err = BadMoney;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == s)
            .ok_or_else(|| BadMoney("must be one of USD, EUR, GBP, NGN, CAD, AUD".into()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount in a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    /// The currency.
    pub currency: Currency,
    /// The amount, scale ≤ 6.
    pub amount: Decimal,
}

/// Parses a decimal amount string: plain digits with an optional sign and point, at most
/// `max_scale` decimals, within ±`MAX_AMOUNT_UNITS`. Negative only when `allow_negative`.
pub fn parse_amount(text: &str, max_scale: u32, allow_negative: bool) -> Result<Decimal, BadMoney> {
    let plain = !text.is_empty()
        && text.len() <= 32
        && text
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
        && text.matches('.').count() <= 1
        && !text.ends_with('.')
        && !text.starts_with('.');
    if !plain {
        return Err(BadMoney(format!(
            "must be a decimal number such as \"99.00\", got {}",
            quoted(text)
        )));
    }
    // Checked on the text: rust_decimal rounds beyond 28 decimals, so
    // "0.000…0001" would otherwise parse as 0.
    let decimals = text
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.trim_end_matches('0').len());
    if decimals > max_scale as usize {
        return Err(BadMoney(format!(
            "must have at most {max_scale} decimal places"
        )));
    }
    let amount = Decimal::from_str(text)
        .map_err(|_| BadMoney(format!("must be a decimal number, got {}", quoted(text))))?;
    if amount.scale() > max_scale && amount.normalize().scale() > max_scale {
        return Err(BadMoney(format!(
            "must have at most {max_scale} decimal places"
        )));
    }
    if amount.is_sign_negative() && !amount.is_zero() && !allow_negative {
        return Err(BadMoney("must not be negative".into()));
    }
    if amount.abs() > Decimal::from(MAX_AMOUNT_UNITS) {
        return Err(BadMoney(format!("must be at most {MAX_AMOUNT_UNITS}")));
    }
    Ok(amount)
}

/// Converts an amount (scale ≤ 6, within bounds) to stored micro-units.
pub fn to_micros(amount: Decimal) -> i64 {
    let scaled = amount * Decimal::from(MICROS_PER_UNIT);
    // Bounded by MAX_AMOUNT_UNITS × 10⁶ < i64::MAX and scale ≤ 6, so this is exact.
    i64::try_from(scaled.trunc()).unwrap_or(i64::MAX)
}

/// Converts stored micro-units back to an amount.
pub fn from_micros(micros: i64) -> Decimal {
    Decimal::new(micros, 6).normalize()
}

/// Formats an amount with at least the currency's minor digits ("99.00", "0.000125").
pub fn format_amount(amount: Decimal, currency: Currency) -> String {
    let min = currency.minor_digits();
    let normalized = amount.normalize();
    if normalized.scale() >= min {
        normalized.to_string()
    } else {
        let mut padded = normalized;
        padded.rescale(min);
        padded.to_string()
    }
}

impl Money {
    /// Money from stored micro-units.
    pub fn from_micros(currency: Currency, micros: i64) -> Self {
        Money {
            currency,
            amount: from_micros(micros),
        }
    }

    /// Stored micro-units.
    pub fn micros(&self) -> i64 {
        to_micros(self.amount)
    }

    /// The amount as a string with at least the minor digits.
    pub fn amount_string(&self) -> String {
        format_amount(self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_amounts_and_refuses_bad_ones() {
        assert_eq!(
            parse_amount("99.00", 2, false).unwrap(),
            Decimal::new(9900, 2)
        );
        assert_eq!(to_micros(parse_amount("0.000125", 6, false).unwrap()), 125);
        for bad in [
            "", "abc", "1e5", "NaN", "inf", "1.2.3", ".5", "5.", "1.001", " 1", "0x10",
        ] {
            assert!(parse_amount(bad, 2, false).is_err(), "{bad:?}");
        }
        assert!(parse_amount("-1.00", 2, false).is_err());
        assert!(parse_amount("-1.00", 2, true).is_ok());
        assert!(parse_amount("1000000000001", 2, false).is_err());
        assert!(
            parse_amount("1.500", 2, false).is_ok(),
            "trailing zeros are not extra precision"
        );
        assert!(parse_amount("0.000000000000000000000000000001", 6, false).is_err());
        assert!(parse_amount("1.00000000000000000000000000000", 2, false).is_ok());
        let huge = parse_amount(&"9".repeat(1 << 20), 6, false).unwrap_err();
        assert!(huge.to_string().len() < 200, "{huge}");
    }

    #[test]
    fn formats_with_minor_digits() {
        assert_eq!(
            format_amount(from_micros(99_000_000), Currency::Usd),
            "99.00"
        );
        assert_eq!(format_amount(from_micros(125), Currency::Usd), "0.000125");
        assert_eq!(format_amount(from_micros(0), Currency::Eur), "0.00");
    }
}

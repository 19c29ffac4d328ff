//! BillingService use cases (SPEC §5): usage metering and spend caps, billing records
//! and summaries, quotas, the credits ledger and payments, invoices, and analytics.

pub mod analytics;
pub mod credits;
pub mod invoices;
pub mod ledger;
pub mod quotas;
pub mod records;
pub mod spend;
pub mod usage;

use crate::{
    domain::{
        money::{self, Currency},
        text,
    },
    error::Violations,
    proto,
};

/// How an amount field may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Greater than zero.
    Positive,
    /// Zero or more.
    NonNegative,
    /// Any sign.
    Any,
}

/// Parses a request's Money in the organization's `currency` (an empty currency code
/// means that currency) with at most `max_scale` decimals; violations go to `v` under
/// `field.currency_code` / `field.amount`. Returns micro-units.
pub fn money_in(
    v: &mut Violations,
    field: &str,
    value: Option<&proto::Money>,
    currency: Currency,
    max_scale: u32,
    sign: Sign,
) -> Option<i64> {
    let Some(value) = value else {
        v.add(field, "is required");
        return None;
    };
    if !value.currency_code.is_empty() && value.currency_code != currency.code() {
        v.add(
            format!("{field}.currency_code"),
            format!("must be the organization's currency {currency}"),
        );
        return None;
    }
    let amount = v.check(
        &format!("{field}.amount"),
        money::parse_amount(&value.amount, max_scale, sign == Sign::Any),
    )?;
    if sign == Sign::Positive && amount.is_zero() {
        v.add(format!("{field}.amount"), "must be greater than zero");
        return None;
    }
    Some(money::to_micros(amount))
}

/// Checks a required `request_id` (1-128 characters).
pub fn require_request_id(v: &mut Violations, request_id: &str) {
    if request_id.is_empty() {
        v.add("request_id", "is required");
    }
}

/// Checks a required reason of at most `max` characters without control characters
/// (other than newlines and tabs); returns it trimmed.
pub fn require_reason(v: &mut Violations, field: &str, reason: &str, max: usize) -> String {
    let trimmed = reason.trim();
    if trimmed.is_empty() {
        v.add(field, "is required");
    } else if let Err(problem) = text::bounded(trimmed, max) {
        v.add(field, problem);
    }
    trimmed.to_owned()
}

//! Validation of an organization's currency, billing rate, plan, usage limits, billing
//! alerts and contact fields, shared by create, update and registration.

use crate::{
    domain::{
        money::{self, Currency},
        org::SpendAction,
        plans::{Catalogue, FREE_PLAN},
        text,
    },
    error::Violations,
    proto,
};

/// Maximum alert thresholds and alert emails.
const MAX_ALERT_ENTRIES: usize = 10;
/// Upper bound of count limits (agents, phone numbers, concurrent calls).
const MAX_COUNT_LIMIT: i32 = 1_000_000;

/// Validated billing and contact settings of an organization.
#[derive(Debug, Clone, Default)]
pub(super) struct Settings {
    pub(super) contact_name: Option<String>,
    pub(super) contact_email: Option<String>,
    pub(super) description: Option<String>,
    pub(super) rate_micros: Option<i64>,
    pub(super) plan: Option<String>,
    pub(super) limits: Option<Limits>,
    pub(super) alerts: Option<Alerts>,
}

/// Validated usage limits of an organization.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub(super) spend_limit_micros: Option<i64>,
    pub(super) max_agents: i32,
    pub(super) max_phone_numbers: i32,
    pub(super) max_concurrent_calls: i32,
}

/// Validated billing alerts of an organization.
#[derive(Debug, Clone)]
pub(crate) struct Alerts {
    pub(crate) thresholds: Vec<u32>,
    pub(crate) emails: Vec<String>,
    pub(crate) action: SpendAction,
}

pub(super) fn parse_rate(
    v: &mut Violations,
    field: &str,
    money_in: &proto::Money,
    currency: Currency,
) -> Option<i64> {
    if !money_in.currency_code.is_empty() && money_in.currency_code != currency.code() {
        v.add(
            format!("{field}.currency_code"),
            format!("must be the organization's currency {currency}"),
        );
        return None;
    }
    v.check(
        &format!("{field}.amount"),
        money::parse_amount(&money_in.amount, 2, false),
    )
    .map(money::to_micros)
}

fn parse_count(v: &mut Violations, field: &str, value: i32) -> i32 {
    if !(0..=MAX_COUNT_LIMIT).contains(&value) {
        v.add(field, format!("must be between 0 and {MAX_COUNT_LIMIT}"));
    }
    value
}

pub(super) fn parse_limits(
    v: &mut Violations,
    field: &str,
    limits: &proto::UsageLimits,
    currency: Currency,
) -> Limits {
    Limits {
        spend_limit_micros: limits
            .monthly_spend_limit
            .as_ref()
            .and_then(|m| parse_rate(v, &format!("{field}.monthly_spend_limit"), m, currency)),
        max_agents: parse_count(v, &format!("{field}.max_agents"), limits.max_agents),
        max_phone_numbers: parse_count(
            v,
            &format!("{field}.max_phone_numbers"),
            limits.max_phone_numbers,
        ),
        max_concurrent_calls: parse_count(
            v,
            &format!("{field}.max_concurrent_calls"),
            limits.max_concurrent_calls,
        ),
    }
}

pub(crate) fn parse_alerts(
    v: &mut Violations,
    field: &str,
    alerts: &proto::BillingAlerts,
) -> Alerts {
    let mut thresholds = alerts.alert_thresholds.clone();
    if thresholds.len() > MAX_ALERT_ENTRIES {
        v.add(
            format!("{field}.alert_thresholds"),
            format!("must have at most {MAX_ALERT_ENTRIES} entries"),
        );
    }
    if thresholds.iter().any(|t| !(1..=100).contains(t)) {
        v.add(
            format!("{field}.alert_thresholds"),
            "must be percentages between 1 and 100",
        );
    }
    thresholds.sort_unstable();
    thresholds.dedup();
    // Past the count limit the list is refused as a whole: checking each element would
    // report (and spend time on) every one of an unbounded list.
    let emails = if alerts.alert_emails.len() > MAX_ALERT_ENTRIES {
        v.add(
            format!("{field}.alert_emails"),
            format!("must have at most {MAX_ALERT_ENTRIES} entries"),
        );
        Vec::new()
    } else {
        alerts
            .alert_emails
            .iter()
            .enumerate()
            .filter_map(|(i, e)| v.check(&format!("{field}.alert_emails[{i}]"), text::email(e)))
            .collect()
    };
    let action = match proto::SpendLimitAction::try_from(alerts.action_at_100) {
        Ok(proto::SpendLimitAction::Unspecified) | Ok(proto::SpendLimitAction::NotifyOnly) => {
            SpendAction::NotifyOnly
        }
        Ok(proto::SpendLimitAction::SuspendUsage) => SpendAction::SuspendUsage,
        Err(_) => {
            v.add(
                format!("{field}.action_at_100"),
                "must be NOTIFY_ONLY or SUSPEND_USAGE",
            );
            SpendAction::NotifyOnly
        }
    };
    Alerts {
        thresholds,
        emails,
        action,
    }
}

/// A plan id of the catalogue.
pub(super) fn parse_plan(
    v: &mut Violations,
    field: &str,
    plan: &str,
    catalogue: &Catalogue,
) -> Option<String> {
    if catalogue.plan(plan).is_some() {
        return Some(plan.to_owned());
    }
    let known: Vec<&str> = catalogue.plans.iter().map(|p| p.id.as_str()).collect();
    v.add(
        field,
        format!("unknown plan; must be one of {}", known.join(", ")),
    );
    None
}

pub(super) fn parse_currency(v: &mut Violations, field: &str, code: &str) -> Option<Currency> {
    if code.is_empty() {
        return Some(Currency::Usd);
    }
    v.check(field, code.parse::<Currency>())
}

pub(super) fn parse_settings(
    v: &mut Violations,
    org_in: &proto::Organization,
    currency: Currency,
    catalogue: &Catalogue,
) -> Settings {
    Settings {
        contact_name: v.check(
            "organization.contact_name",
            text::bounded(&org_in.contact_name, 200).map(|s| s.trim().to_owned()),
        ),
        contact_email: v.check(
            "organization.contact_email",
            text::optional_email(&org_in.contact_email),
        ),
        description: v.check(
            "organization.description",
            text::bounded(&org_in.description, 1000).map(str::to_owned),
        ),
        rate_micros: match &org_in.billing_rate_per_agent {
            Some(m) => parse_rate(v, "organization.billing_rate_per_agent", m, currency),
            None => Some(0),
        },
        plan: if org_in.plan.is_empty() {
            Some(FREE_PLAN.to_owned())
        } else {
            parse_plan(v, "organization.plan", &org_in.plan, catalogue)
        },
        limits: org_in
            .usage_limits
            .as_ref()
            .map(|l| parse_limits(v, "organization.usage_limits", l, currency)),
        alerts: org_in
            .billing_alerts
            .as_ref()
            .map(|a| parse_alerts(v, "organization.billing_alerts", a)),
    }
}

//! The checks of one event, before anything is read: id, agent id, metric, quantity,
//! cost in the organization's currency, the time window and the dimensions.

use std::collections::BTreeMap;

use crate::{
    domain::{
        billing::{MAX_EVENT_AGE_MICROS, MAX_EVENT_SKEW_MICROS, Metric, Month},
        ids::{self, IdKind},
        money::Currency,
    },
    error::Error,
    grpc::convert,
    proto,
    service::billing::{Sign, money_in},
};

use super::Refusal;

const MAX_QUANTITY: i64 = 1_000_000_000_000;
const MAX_DIMENSIONS: usize = 16;

/// A checked event.
#[derive(Debug, Clone)]
pub(crate) struct Valid {
    pub index: usize,
    pub event_id: String,
    pub agent_id: uuid::Uuid,
    pub metric: Metric,
    pub quantity: i64,
    pub cost_micros: i64,
    pub occurred_at: i64,
    pub month: Month,
    pub channel: String,
    pub dimensions: String,
}

/// Checks `event` (at `index` in its request) for an organization in `currency` at `now`.
pub(super) fn check(
    event: &proto::UsageEvent,
    index: usize,
    currency: Currency,
    now: i64,
) -> Result<Valid, Refusal> {
    let id_len = event.event_id.chars().count();
    if id_len == 0 || id_len > 128 || event.event_id.chars().any(char::is_control) {
        return Err(Refusal::invalid(
            "event_id",
            "must be 1-128 printable characters",
        ));
    }
    let agent_id = ids::decode(IdKind::Agent, &event.agent_id)
        .map_err(|e| Refusal::invalid("agent_id", e.to_string()))?;
    let metric = match proto::UsageMetric::try_from(event.metric) {
        Ok(proto::UsageMetric::Tokens) => Metric::Tokens,
        Ok(proto::UsageMetric::Messages) => Metric::Messages,
        Ok(proto::UsageMetric::Conversations) => Metric::Conversations,
        Ok(proto::UsageMetric::Minutes) => Metric::Minutes,
        Ok(proto::UsageMetric::Logs) => Metric::Logs,
        _ => {
            return Err(Refusal::invalid(
                "metric",
                "must be TOKENS, MESSAGES, CONVERSATIONS, MINUTES or LOGS",
            ));
        }
    };
    if !(0..=MAX_QUANTITY).contains(&event.quantity) {
        return Err(Refusal::invalid("quantity", "must be between 0 and 10^12"));
    }
    let cost_micros = match &event.cost {
        None => 0,
        Some(cost) => {
            let mut v = crate::error::Violations::new();
            match money_in(&mut v, "cost", Some(cost), currency, 6, Sign::NonNegative) {
                Some(micros) => micros,
                None => {
                    let message = match v.finish() {
                        Err(Error::InvalidArgument(list)) => list
                            .into_iter()
                            .map(|f| format!("{}: {}", f.field, f.description))
                            .collect::<Vec<_>>()
                            .join("; "),
                        _ => "is not a valid amount".to_owned(),
                    };
                    return Err(Refusal::invalid("cost", message));
                }
            }
        }
    };
    let occurred_at = event
        .occurred_at
        .as_ref()
        .and_then(convert::micros)
        .ok_or_else(|| Refusal::invalid("occurred_at", "is required"))?;
    if occurred_at < now - MAX_EVENT_AGE_MICROS || occurred_at > now + MAX_EVENT_SKEW_MICROS {
        return Err(Refusal {
            reason: "EVENT_OUT_OF_WINDOW",
            message: "must be at most 35 days in the past and 5 minutes in the future".into(),
            field: Some("occurred_at"),
            metadata: Vec::new(),
        });
    }
    if event.dimensions.len() > MAX_DIMENSIONS {
        return Err(Refusal::invalid(
            "dimensions",
            "must have at most 16 entries",
        ));
    }
    for (k, v) in &event.dimensions {
        let bad_key = k.is_empty() || k.chars().count() > 64 || k.chars().any(char::is_control);
        if bad_key || v.chars().count() > 256 || v.chars().any(char::is_control) {
            return Err(Refusal::invalid(
                "dimensions",
                "keys must be 1-64 and values at most 256 printable characters",
            ));
        }
    }
    let sorted: BTreeMap<&String, &String> = event.dimensions.iter().collect();
    Ok(Valid {
        index,
        event_id: event.event_id.clone(),
        agent_id,
        metric,
        quantity: event.quantity,
        cost_micros,
        occurred_at,
        month: Month::of(occurred_at),
        channel: event
            .dimensions
            .get("channel")
            .filter(|c| !c.is_empty())
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
        dimensions: serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".into()),
    })
}

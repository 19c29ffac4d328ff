//! Usage metering: RecordUsage, RecordUsageBatch and StreamUsage batches.
//!
//! One batch is one transaction. It first locks the organization's month-to-date
//! counter rows (`usage_counters`, in month order), which serializes recorders of the
//! same organization and month on every replica; then it decides each event in request
//! order against the state under those locks: duplicate (`event_id` already recorded),
//! refused (org inactive, unknown agent, agent suspended, spend limit reached, a LOGS
//! event past the plan's `max_logs_per_month`), or accepted. Accepted events are
//! inserted, and their billing records, counters and spend alerts updated, before the
//! commit. Because the spend check reads the locked counter, the month's cost passes a
//! SUSPEND_USAGE limit by at most the event that crossed it, and each alert threshold
//! fires once. The logs limit reads the same locked counter, so a month's logs never
//! pass it: an event that would is refused whole. A concurrent batch that raced on the
//! same `event_id` in another month loses on the unique key and the batch is retried,
//! where it then sees a duplicate.
//!
//! Usage events are their own audit trail (each row records who recorded it and when);
//! audit entries are written for the spend alerts they trigger, not per event.

mod ingest;

use std::collections::{BTreeMap, HashMap};

use tonic::Code;

use crate::{
    auth::{Caller, OrgAccess},
    domain::{
        billing::{MAX_EVENT_AGE_MICROS, MAX_EVENT_SKEW_MICROS, Metric, Month},
        ids::{self, IdKind},
        money::Currency,
    },
    error::{Error, FieldViolation, Result},
    grpc::{Ctx, convert},
    proto,
};

use super::{Sign, money_in};

/// Events per batch.
pub const MAX_BATCH: usize = 1000;
const MAX_QUANTITY: i64 = 1_000_000_000_000;
const MAX_DIMENSIONS: usize = 16;

/// A checked event.
#[derive(Debug, Clone)]
pub(crate) struct Valid {
    index: usize,
    event_id: String,
    agent_id: uuid::Uuid,
    metric: Metric,
    quantity: i64,
    cost_micros: i64,
    occurred_at: i64,
    month: Month,
    channel: String,
    dimensions: String,
}

/// Why an event was not accepted.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    reason: &'static str,
    message: String,
    field: Option<&'static str>,
    /// Facts for the unary call's `ErrorInfo` (e.g. a plan limit's numbers).
    metadata: Vec<(&'static str, String)>,
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
            field: None,
            metadata: Vec::new(),
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            reason: "INVALID_EVENT",
            message: message.into(),
            field: Some(field),
            metadata: Vec::new(),
        }
    }

    /// The refusal of an event for a domain error (its reason, message and facts).
    fn from_error(error: Error) -> Self {
        match error {
            Error::Rejected {
                reason,
                message,
                metadata,
                ..
            } => Refusal {
                reason,
                message,
                field: None,
                metadata,
            },
            other => Refusal::new(other.reason(), other.to_string()),
        }
    }

    /// The error a unary RecordUsage answers with.
    fn into_error(self) -> Error {
        let code = match self.reason {
            "SPEND_LIMIT_REACHED" | "PLAN_LIMIT_REACHED" => Code::ResourceExhausted,
            "ORG_INACTIVE" | "AGENT_SUSPENDED" => Code::FailedPrecondition,
            "UNKNOWN_AGENT" => Code::NotFound,
            _ => {
                return Error::InvalidWithReason {
                    reason: self.reason,
                    violations: vec![FieldViolation {
                        field: format!("event.{}", self.field.unwrap_or("event_id")),
                        description: self.message,
                    }],
                };
            }
        };
        self.metadata.into_iter().fold(
            Error::rejected(code, self.reason, self.message),
            |error, (key, value)| error.with(key, value),
        )
    }
}

/// The decision about one event.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Accepted,
    Duplicate,
    Refused(Refusal),
}

fn check(
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

/// Records a batch of events for the authorized organization; one result per event.
pub(crate) async fn record_events(
    ctx: &Ctx,
    access: &OrgAccess,
    events: &[proto::UsageEvent],
) -> Result<Vec<proto::UsageEventResult>> {
    let org = access.org();
    let currency = convert::org_currency(org);
    let now = ctx.store.now();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
    let mut valid = Vec::with_capacity(events.len());
    // First index of each valid event_id; later repeats share its fate.
    let mut first: HashMap<String, usize> = HashMap::with_capacity(events.len());
    let mut repeats = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match check(event, index, currency, now) {
            Ok(v) => match first.get(&v.event_id) {
                Some(&earlier) => repeats.push((index, earlier)),
                None => {
                    first.insert(v.event_id.clone(), index);
                    valid.push(v);
                }
            },
            Err(refusal) => outcomes[index] = Some(Outcome::Refused(refusal)),
        }
    }
    if !valid.is_empty() {
        let decided = ingest::with_retries(ctx, access, &valid, now).await?;
        for (index, outcome) in decided {
            outcomes[index] = Some(outcome);
        }
    }
    // A repeat is a duplicate of what was recorded, or refused like its first occurrence.
    for (index, earlier) in repeats {
        outcomes[index] = Some(match &outcomes[earlier] {
            Some(Outcome::Refused(refusal)) => Outcome::Refused(refusal.clone()),
            _ => Outcome::Duplicate,
        });
    }
    Ok(events
        .iter()
        .zip(outcomes)
        .enumerate()
        .map(|(index, (event, outcome))| {
            let outcome = outcome.unwrap_or(Outcome::Duplicate);
            let (status, reason, message) = match outcome {
                Outcome::Accepted => (proto::UsageEventStatus::Accepted, "", String::new()),
                Outcome::Duplicate => (proto::UsageEventStatus::Duplicate, "", String::new()),
                Outcome::Refused(r) => (proto::UsageEventStatus::Refused, r.reason, r.message),
            };
            proto::UsageEventResult {
                event_id: event.event_id.clone(),
                index: index as u32,
                status: status as i32,
                reason: reason.to_owned(),
                message,
            }
        })
        .collect())
}

/// RecordUsage: one event; a refusal is the call's error.
pub async fn record(
    ctx: Ctx,
    caller: Caller,
    req: proto::RecordUsageRequest,
) -> Result<proto::RecordUsageResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let Some(event) = req.event else {
        return Err(Error::invalid("event", "is required"));
    };
    let org = access.org();
    let now = ctx.store.now();
    let valid = check(&event, 0, convert::org_currency(org), now).map_err(Refusal::into_error)?;
    let decided = ingest::with_retries(&ctx, &access, std::slice::from_ref(&valid), now).await?;
    let outcome = decided
        .into_iter()
        .next()
        .map(|(_, o)| o)
        .unwrap_or(Outcome::Duplicate);
    let status = match outcome {
        Outcome::Accepted => proto::UsageEventStatus::Accepted,
        Outcome::Duplicate => proto::UsageEventStatus::Duplicate,
        Outcome::Refused(refusal) => return Err(refusal.into_error()),
    };
    Ok(proto::RecordUsageResponse {
        result: Some(proto::UsageEventResult {
            event_id: event.event_id,
            index: 0,
            status: status as i32,
            reason: String::new(),
            message: String::new(),
        }),
    })
}

fn check_batch_size(events: usize) -> Result<()> {
    if events == 0 || events > MAX_BATCH {
        return Err(Error::invalid("events", "must hold 1 to 1000 events"));
    }
    Ok(())
}

fn counts(results: &[proto::UsageEventResult]) -> (u32, u32, u32) {
    let count =
        |s: proto::UsageEventStatus| results.iter().filter(|r| r.status == s as i32).count() as u32;
    (
        count(proto::UsageEventStatus::Accepted),
        count(proto::UsageEventStatus::Duplicate),
        count(proto::UsageEventStatus::Refused),
    )
}

/// RecordUsageBatch: up to 1,000 events, each with its own result.
pub async fn record_batch(
    ctx: Ctx,
    caller: Caller,
    req: proto::RecordUsageBatchRequest,
) -> Result<proto::RecordUsageBatchResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    check_batch_size(req.events.len())?;
    let results = record_events(&ctx, &access, &req.events).await?;
    let (accepted_count, duplicate_count, refused_count) = counts(&results);
    Ok(proto::RecordUsageBatchResponse {
        results,
        accepted_count,
        duplicate_count,
        refused_count,
    })
}

/// StreamUsage: each message is one batch committed as it arrives; the response
/// acknowledges every batch once the client closes the stream. A message naming another
/// organization or holding no or too many events ends the stream with INVALID_ARGUMENT
/// (batches already committed stay committed).
pub async fn stream(
    ctx: Ctx,
    caller: Caller,
    mut stream: tonic::Streaming<proto::StreamUsageRequest>,
) -> Result<proto::StreamUsageResponse> {
    let mut access: Option<(String, OrgAccess)> = None;
    let mut response = proto::StreamUsageResponse::default();
    let mut batch_index: u32 = 0;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                return Err(Error::rejected(
                    Code::Cancelled,
                    "STREAM_BROKEN",
                    format!(
                        "the usage stream broke after {batch_index} batches: {}",
                        status.message()
                    ),
                ));
            }
        };
        let org_access = match &access {
            Some((name, org_access)) => {
                if !message.organization_id.is_empty() && message.organization_id != *name {
                    return Err(Error::invalid(
                        "organization_id",
                        "must be the same in every message of the stream",
                    ));
                }
                org_access
            }
            None => {
                let granted = caller
                    .authorize(&ctx.store, "organization_id", &message.organization_id)
                    .await?;
                &access.insert((message.organization_id.clone(), granted)).1
            }
        };
        check_batch_size(message.events.len())?;
        let results = record_events(&ctx, org_access, &message.events).await?;
        let (accepted, duplicate, refused) = counts(&results);
        response.accepted_count += u64::from(accepted);
        response.duplicate_count += u64::from(duplicate);
        response.refused_count += u64::from(refused);
        response.batches.push(proto::UsageBatchAck {
            batch_index,
            accepted_count: accepted,
            duplicate_count: duplicate,
            refused_count: refused,
            refused_results: results
                .into_iter()
                .filter(|r| r.status == proto::UsageEventStatus::Refused as i32)
                .collect(),
        });
        batch_index += 1;
    }
    if access.is_none() {
        caller.authorize(&ctx.store, "organization_id", "").await?;
        return Err(Error::invalid("events", "the stream held no batch"));
    }
    Ok(response)
}

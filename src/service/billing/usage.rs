//! Usage metering: RecordUsage, RecordUsageBatch and StreamUsage batches.
//!
//! An ingestion records one or more callers' batches (each of one organization) in one
//! transaction, in this order:
//!
//! 1. **Reads, before `BEGIN` and without locks** (`reads`, run concurrently): the
//!    event ids already recorded (probes of the unique (organization, event_id)
//!    index: on PostgreSQL a join with the asked pairs passed as one `jsonb`
//!    parameter, which no other index can answer even before the table has
//!    statistics; on SQLite one index range per organization), the agents and their assignments, and — only for
//!    organizations with a spend limit — the alerts already fired in the events'
//!    months. On SQLite they run outside the single writer's lock. The organization
//!    row is the one the auth layer read for the call ([`OrgAccess::org`]), not read
//!    again: ingestion never locked that row, so a read inside the transaction was no
//!    fresher in any way that mattered (a deactivation, plan or spend-limit change
//!    committing right after it went unseen just the same); status, plan, rate and
//!    spend settings are those the call was authorized under.
//! 2. When those reads decide every event (duplicate, organization inactive, agent
//!    unknown or suspended), nothing is locked or written.
//! 3. **Lock last** (`writes`): `BEGIN`, then one upsert per 500 counter rows
//!    (`usage_counters`, one per organization and month of the events still
//!    undecided) whose no-op update takes each row's lock and returns its totals. Rows
//!    are locked in (organization, month) order, so two ingestions never deadlock on
//!    them; the locks serialize recorders of the same organization and month on every
//!    replica, and are held for three statements and the commit.
//! 4. **Decide** each event in arrival order against the locked totals with the events
//!    before it applied: duplicate (recorded, or accepted earlier in this ingestion),
//!    refused (org inactive, unknown agent, agent suspended, spend limit reached, a LOGS
//!    event past the plan's `max_logs_per_month`), or accepted.
//! 5. **Write** without reading: one INSERT of the accepted events (ordered by
//!    organization and event id; on PostgreSQL from one `jsonb` parameter, a statement
//!    text that does not change with the number of events), one upsert of the billing records that adds tokens and
//!    cost to each (organization, agent, month) record and sets the agent's current name
//!    (a new record takes the agent's effective monthly rate; an existing one keeps its
//!    rate, `custom_rate` and `invoice_id`, billed or not), one upsert adding the
//!    accepted amounts to the locked counters, the spend alerts, then `COMMIT`.
//!
//! What holds: because the spend check reads the locked counter, the month's cost passes
//! a SUSPEND_USAGE limit by at most the event that crossed it; the logs limit reads the
//! same counter, so a month's logs never pass it (an event that would is refused whole).
//! Each alert threshold fires once: the fired list is read before the lock, so a
//! threshold another transaction fired in between looks new, but the alert's insert
//! does nothing on its unique (organization, month, threshold) key and the outbox
//! event, emails and audit entry go with the insert. An `event_id` recorded by a
//! concurrent batch between the read and the insert (in any month, on any replica)
//! fails the insert on the unique key; the ingestion is retried — as it is when the
//! database picks it as a deadlock victim — and then sees a duplicate.
//!
//! **Group commit** (`group`): every batch — a RecordUsage event, a RecordUsageBatch, a
//! StreamUsage message — queues in one queue per process, across organizations. A
//! caller that finds no drain running spawns one; the drain ingests everything queued
//! (up to 1,000 events) as one ingestion, then loops. A group is one transaction for
//! all its callers — one read of each kind, one counter lock statement for every
//! organization in (organization, month) order, one events INSERT, one records
//! upsert, one counters upsert — and each caller is answered with its own outcomes
//! only after the commit. Nothing waits on purpose: a group is what arrived while the
//! previous commit ran. If a group's transaction fails for any reason, each caller's
//! batch is ingested alone with the retries, so one caller's failure stays its own.
//! Accepted events are counted in the metrics once, after their commit.
//!
//! Usage events are their own audit trail (each row records who recorded it and when);
//! audit entries are written for the spend alerts they trigger, not per event.

mod alerts;
mod check;
mod group;
mod ingest;
mod reads;
mod writes;

use std::collections::HashMap;

use tonic::Code;

use crate::{
    auth::{Caller, OrgAccess},
    error::{Error, FieldViolation, Result},
    grpc::{Ctx, convert},
    proto,
};

use check::{Valid, check};
pub use group::GroupCommit;
use ingest::Member;

/// Events per batch.
pub const MAX_BATCH: usize = 1000;

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
        let member = Member {
            access: access.clone(),
            valid,
            now,
        };
        let decided = group::ingest(ctx, member).await?;
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
    let member = Member {
        access,
        valid: vec![valid],
        now,
    };
    let decided = group::ingest(&ctx, member).await?;
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

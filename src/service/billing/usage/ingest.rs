//! The ingestion transaction of one batch (see the parent module for the rules).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QuerySelect, sea_query::LockType,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    auth::OrgAccess,
    domain::events::{EmailKind, types},
    domain::{
        billing::{Metric, Month},
        ids::{self, IdKind, new_id},
        money::Money,
        org::{AgentStatus, OrgStatus},
    },
    error::{Error, Result},
    events::{email, outbox},
    grpc::{Ctx, convert},
    service::{audit, billing::quotas::effective_limits, subscriptions::limit_reached},
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{
            agent_assignments, agents, billing_records, organizations, spend_alerts,
            usage_counters, usage_events,
        },
    },
};

use super::{Outcome, Refusal, Valid};
use crate::service::billing::spend::SpendRules;

/// Rows per multi-row INSERT (well under both backends' bind-parameter limits).
const INSERT_CHUNK: usize = 500;
const ATTEMPTS: usize = 3;

/// Runs [`ingest`], retrying when a concurrent batch won a unique key or the database
/// picked this transaction as a deadlock victim.
pub(super) async fn with_retries(
    ctx: &Ctx,
    access: &OrgAccess,
    valid: &[Valid],
    now: i64,
) -> Result<Vec<(usize, Outcome)>> {
    let mut attempt = 1;
    loop {
        match ingest(ctx, access, valid, now).await {
            Err(e) if attempt < ATTEMPTS && retryable(&e) => attempt += 1,
            Ok(decided) => {
                let accepted = decided
                    .iter()
                    .filter(|(_, outcome)| matches!(outcome, Outcome::Accepted))
                    .count();
                ctx.metrics.usage_events_ingested(accepted as u64);
                return Ok(decided);
            }
            other => return other,
        }
    }
}

fn retryable(error: &Error) -> bool {
    if error.is_unique_violation() {
        return true;
    }
    match error {
        Error::Database(e) => {
            let text = e.to_string();
            text.contains("deadlock detected") || text.contains("could not serialize")
        }
        _ => false,
    }
}

/// Locks (creating them on first use) the counter rows of `months`, in month order.
async fn lock_counters(
    tx: &Tx,
    org_id: Uuid,
    months: &BTreeSet<Month>,
    now: i64,
) -> Result<BTreeMap<Month, usage_counters::Model>> {
    let mut locked = BTreeMap::new();
    for month in months {
        usage_counters::Entity::insert(usage_counters::ActiveModel {
            organization_id: Set(org_id),
            month: Set(month.to_string()),
            cost_micros: Set(0),
            tokens: Set(0),
            messages: Set(0),
            conversations: Set(0),
            minutes: Set(0),
            logs: Set(0),
            events: Set(0),
            update_time: Set(now),
        })
        .on_conflict_do_nothing_on([
            usage_counters::Column::OrganizationId,
            usage_counters::Column::Month,
        ])
        .exec(&**tx)
        .await?;
        let row = usage_counters::Entity::find_by_id((org_id, month.to_string()))
            .lock(LockType::Update)
            .one(&**tx)
            .await?
            .ok_or_else(|| Error::Internal("usage counter vanished under its lock".into()))?;
        locked.insert(*month, row);
    }
    Ok(locked)
}

/// What the batch reads under the counter locks.
struct Snapshot {
    org: organizations::Model,
    counters: BTreeMap<Month, usage_counters::Model>,
    recorded: HashSet<String>,
    agents: HashMap<Uuid, agents::Model>,
    assignments: Vec<agent_assignments::Model>,
    records: HashMap<(Uuid, String), billing_records::Model>,
    fired: HashMap<String, Vec<u32>>,
}

async fn snapshot(tx: &Tx, org_id: Uuid, valid: &[Valid], now: i64) -> Result<Snapshot> {
    let months: BTreeSet<Month> = valid.iter().map(|v| v.month).collect();
    let counters = lock_counters(tx, org_id, &months, now).await?;
    let org = organizations::Entity::find_by_id(org_id)
        .one(&**tx)
        .await?
        .ok_or_else(|| {
            Error::not_found("organization", &ids::encode(IdKind::Organization, org_id))
        })?;
    let event_ids: Vec<&str> = valid.iter().map(|v| v.event_id.as_str()).collect();
    let recorded: Vec<String> = usage_events::Entity::find()
        .select_only()
        .column(usage_events::Column::EventId)
        .filter(usage_events::Column::OrganizationId.eq(org_id))
        .filter(usage_events::Column::EventId.is_in(event_ids))
        .into_tuple()
        .all(&**tx)
        .await?;
    let agent_ids: BTreeSet<Uuid> = valid.iter().map(|v| v.agent_id).collect();
    let agents = agents::Entity::find()
        .filter(agents::Column::Id.is_in(agent_ids.iter().copied()))
        .all(&**tx)
        .await?;
    let assignments = agent_assignments::Entity::find()
        .filter(agent_assignments::Column::AgentId.is_in(agent_ids.iter().copied()))
        .filter(agent_assignments::Column::OrganizationId.eq(org_id))
        .all(&**tx)
        .await?;
    let month_names: Vec<String> = months.iter().map(Month::to_string).collect();
    let records = billing_records::Entity::find()
        .filter(billing_records::Column::OrganizationId.eq(org_id))
        .filter(billing_records::Column::AgentId.is_in(agent_ids.iter().copied()))
        .filter(billing_records::Column::Month.is_in(month_names.clone()))
        .all(&**tx)
        .await?;
    let alerts = spend_alerts::Entity::find()
        .filter(spend_alerts::Column::OrganizationId.eq(org_id))
        .filter(spend_alerts::Column::Month.is_in(month_names))
        .all(&**tx)
        .await?;
    let mut fired: HashMap<String, Vec<u32>> = HashMap::new();
    for alert in alerts {
        fired
            .entry(alert.month)
            .or_default()
            .push(alert.threshold as u32);
    }
    Ok(Snapshot {
        org,
        counters,
        recorded: recorded.into_iter().collect(),
        agents: agents.into_iter().map(|a| (a.id, a)).collect(),
        assignments,
        records: records
            .into_iter()
            .map(|r| ((r.agent_id, r.month.clone()), r))
            .collect(),
        fired,
    })
}

/// Whether the agent belonged to the organization at `at` (assignments are
/// half-open: `[assign_time, unassign_time)`).
fn belonged(assignments: &[agent_assignments::Model], agent_id: Uuid, at: i64) -> bool {
    assignments.iter().any(|a| {
        a.agent_id == agent_id && a.assign_time <= at && a.unassign_time.is_none_or(|end| at < end)
    })
}

/// A spend threshold crossed by this batch.
struct Crossing {
    month: Month,
    threshold: u32,
    mtd: i64,
    limit: i64,
}

/// Refuses a LOGS event that would take its month past the plan's
/// `max_logs_per_month` (the counter read under its lock, with this batch's accepted
/// events applied). Other metrics have no plan limit.
fn check_logs(snap: &Snapshot, v: &Valid, max_logs: Option<i64>) -> Result<(), Refusal> {
    let Some(allowed) = max_logs.filter(|_| v.metric == Metric::Logs) else {
        return Ok(());
    };
    let used = snap.counters.get(&v.month).map_or(0, |c| c.logs);
    if used.saturating_add(v.quantity) <= allowed {
        return Ok(());
    }
    let error = limit_reached(&snap.org, "max_logs_per_month", used, allowed)
        .with("month", v.month)
        .with("requested", v.quantity);
    Err(Refusal::from_error(error))
}

fn decide(
    snap: &Snapshot,
    v: &Valid,
    rules: &SpendRules,
    max_logs: Option<i64>,
) -> Result<Outcome, Refusal> {
    if snap.recorded.contains(&v.event_id) {
        return Ok(Outcome::Duplicate);
    }
    let org_live = snap.org.delete_time.is_none() && snap.org.status == OrgStatus::Active.as_str();
    if !org_live {
        return Err(Refusal::new(
            "ORG_INACTIVE",
            "the organization is not active",
        ));
    }
    let unknown = || {
        Refusal::new(
            "UNKNOWN_AGENT",
            "the agent did not belong to this organization at occurred_at",
        )
    };
    let agent = snap.agents.get(&v.agent_id).ok_or_else(unknown)?;
    if !belonged(&snap.assignments, v.agent_id, v.occurred_at) {
        return Err(unknown());
    }
    if agent.organization_id == snap.org.id && agent.status == AgentStatus::Suspended.as_str() {
        return Err(Refusal::new("AGENT_SUSPENDED", "the agent is suspended"));
    }
    let mtd = snap
        .counters
        .get(&v.month)
        .map(|c| c.cost_micros)
        .unwrap_or(0);
    if rules.blocks(mtd) {
        return Err(Refusal::new(
            "SPEND_LIMIT_REACHED",
            format!("the monthly spend limit is reached for {}", v.month),
        ));
    }
    check_logs(snap, v, max_logs)?;
    Ok(Outcome::Accepted)
}

fn apply(counter: &mut usage_counters::Model, v: &Valid) {
    counter.cost_micros += v.cost_micros;
    counter.events += 1;
    let slot = match v.metric {
        Metric::Tokens => &mut counter.tokens,
        Metric::Messages => &mut counter.messages,
        Metric::Conversations => &mut counter.conversations,
        Metric::Minutes => &mut counter.minutes,
        Metric::Logs => &mut counter.logs,
    };
    *slot += v.quantity;
}

async fn ingest(
    ctx: &Ctx,
    access: &OrgAccess,
    valid: &[Valid],
    now: i64,
) -> Result<Vec<(usize, Outcome)>> {
    let tx = ctx.store.write().await?;
    let mut snap = snapshot(&tx, access.org().id, valid, now).await?;
    let rules = SpendRules::of(&snap.org);
    let max_logs = effective_limits(&ctx.settings.billing.catalogue, &snap.org).max_logs_per_month;
    let recorded_by = access.principal().author();
    let mut decided = Vec::with_capacity(valid.len());
    let mut rows = Vec::new();
    let mut touched: BTreeSet<(Uuid, String)> = BTreeSet::new();
    let mut crossings = Vec::new();
    for v in valid {
        let outcome = match decide(&snap, v, &rules, max_logs) {
            Ok(Outcome::Accepted) => {
                snap.recorded.insert(v.event_id.clone());
                if let Some(counter) = snap.counters.get_mut(&v.month) {
                    apply(counter, v);
                    let fired = snap.fired.entry(v.month.to_string()).or_default();
                    for threshold in rules.newly_crossed(counter.cost_micros, fired) {
                        fired.push(threshold);
                        crossings.push(Crossing {
                            month: v.month,
                            threshold,
                            mtd: counter.cost_micros,
                            limit: rules.limit_micros.unwrap_or_default(),
                        });
                    }
                }
                add_to_record(&mut snap, v, now);
                touched.insert((v.agent_id, v.month.to_string()));
                rows.push(event_row(access, v, &recorded_by, now));
                Outcome::Accepted
            }
            Ok(other) => other,
            Err(refusal) => Outcome::Refused(refusal),
        };
        decided.push((v.index, outcome));
    }
    for chunk in rows.chunks(INSERT_CHUNK) {
        usage_events::Entity::insert_many(chunk.to_vec())
            .exec(&*tx)
            .await?;
    }
    if !rows.is_empty() {
        save_records(&tx, &snap, &touched).await?;
        for counter in snap.counters.values() {
            let mut row = counter.clone().into_active_model();
            row.cost_micros = Set(counter.cost_micros);
            row.tokens = Set(counter.tokens);
            row.messages = Set(counter.messages);
            row.conversations = Set(counter.conversations);
            row.minutes = Set(counter.minutes);
            row.logs = Set(counter.logs);
            row.events = Set(counter.events);
            row.update_time = Set(now);
            row.update(&*tx).await?;
        }
    }
    record_crossings(ctx, &tx, access, &snap.org, &crossings, now).await?;
    tx.commit().await?;
    Ok(decided)
}

fn event_row(
    access: &OrgAccess,
    v: &Valid,
    recorded_by: &str,
    now: i64,
) -> usage_events::ActiveModel {
    usage_events::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(access.org().id),
        event_id: Set(v.event_id.clone()),
        agent_id: Set(v.agent_id),
        metric: Set(v.metric.as_str().to_owned()),
        quantity: Set(v.quantity),
        cost_micros: Set(v.cost_micros),
        occurred_at: Set(v.occurred_at),
        month: Set(v.month.to_string()),
        channel: Set(v.channel.clone()),
        dimensions: Set(v.dimensions.clone()),
        recorded_by: Set(recorded_by.to_owned()),
        create_time: Set(now),
    }
}

/// Adds an accepted event to its (agent, month) billing record, creating the record
/// with the agent's effective monthly rate on the agent's first work of the month.
fn add_to_record(snap: &mut Snapshot, v: &Valid, now: i64) {
    let key = (v.agent_id, v.month.to_string());
    let agent = snap.agents.get(&v.agent_id);
    let name = agent.map(|a| a.name.clone()).unwrap_or_default();
    let tokens = if v.metric == Metric::Tokens {
        v.quantity
    } else {
        0
    };
    if let Some(record) = snap.records.get_mut(&key) {
        record.tokens += tokens;
        record.cost_micros += v.cost_micros;
        record.agent_name = name;
        record.update_time = now;
        return;
    }
    let custom = agent.and_then(|a| a.billing_rate_micros);
    snap.records.insert(
        key.clone(),
        billing_records::Model {
            id: Uuid::nil(),
            organization_id: snap.org.id,
            agent_id: v.agent_id,
            month: key.1,
            agent_name: name,
            tokens,
            cost_micros: v.cost_micros,
            revenue_micros: custom.unwrap_or(snap.org.billing_rate_micros),
            custom_rate: custom.is_some(),
            invoice_id: None,
            create_time: now,
            update_time: now,
        },
    );
}

async fn save_records(tx: &Tx, snap: &Snapshot, touched: &BTreeSet<(Uuid, String)>) -> Result<()> {
    let mut fresh = Vec::new();
    for key in touched {
        let Some(record) = snap.records.get(key) else {
            continue;
        };
        if record.id.is_nil() {
            let mut row = record.clone().into_active_model();
            row.id = Set(new_id());
            fresh.push(row.reset_all());
        } else {
            let mut row = record.clone().into_active_model();
            row.tokens = Set(record.tokens);
            row.cost_micros = Set(record.cost_micros);
            row.agent_name = Set(record.agent_name.clone());
            row.update_time = Set(record.update_time);
            row.update(&**tx).await?;
        }
    }
    for chunk in fresh.chunks(INSERT_CHUNK) {
        billing_records::Entity::insert_many(chunk.to_vec())
            .exec(&**tx)
            .await?;
    }
    Ok(())
}

/// Emails a crossed threshold to the organization's alert addresses (the owner when it
/// set none).
async fn queue_spend_alert(
    tx: &Tx,
    now: i64,
    org: &organizations::Model,
    event: Uuid,
    c: &Crossing,
) -> Result<()> {
    let mut to: Vec<String> = serde_json::from_str(&org.alert_emails).unwrap_or_default();
    if to.is_empty() && !org.owner_email.is_empty() {
        to.push(org.owner_email.clone());
    }
    let currency = convert::org_currency(org);
    let show = |m| Money::from_micros(currency, m).amount_string();
    for address in to {
        email::queue(
            tx,
            now,
            org,
            Some(event),
            email::Email {
                kind: EmailKind::BillingAlert,
                to: address,
                subject: format!(
                    "{}: {} % of the monthly spend limit reached",
                    org.name, c.threshold
                ),
                body: format!(
                    "Hello,\n\n{} ({}) has spent {} {} in {}, {} % of its monthly spend limit of {} {}.\n",
                    org.name,
                    org.slug,
                    show(c.mtd),
                    currency.code(),
                    c.month,
                    c.threshold,
                    show(c.limit),
                    currency.code()
                ),
            },
        )
        .await?;
    }
    Ok(())
}

/// Stores each crossed threshold once (a unique key per organization, month and
/// threshold) with its audit entry.
async fn record_crossings(
    ctx: &Ctx,
    tx: &Tx,
    access: &OrgAccess,
    org: &organizations::Model,
    crossings: &[Crossing],
    now: i64,
) -> Result<()> {
    let currency = convert::org_currency(org);
    for c in crossings {
        let id = new_id();
        spend_alerts::ActiveModel {
            id: Set(id),
            organization_id: Set(org.id),
            month: Set(c.month.to_string()),
            threshold: Set(c.threshold as i32),
            month_to_date_micros: Set(c.mtd),
            limit_micros: Set(c.limit),
            trigger_time: Set(now),
        }
        .insert(&**tx)
        .await?;
        tracing::info!(
            organization = %ids::encode(IdKind::Organization, org.id),
            month = %c.month,
            threshold = c.threshold,
            "spend threshold crossed"
        );
        let show = |m| Money::from_micros(currency, m).amount_string();
        let data = json!({
            "organization_id": ids::encode(IdKind::Organization, org.id),
            "month": c.month.to_string(),
            "threshold": c.threshold,
            "month_to_date_cost": show(c.mtd),
            "monthly_spend_limit": show(c.limit),
            "currency": currency.code(),
        });
        let event = outbox::emit(
            tx,
            now,
            org,
            types::USAGE_THRESHOLD_CROSSED,
            "",
            data.clone(),
        )
        .await?;
        queue_spend_alert(tx, now, org, event, c).await?;
        audit(
            tx,
            ctx,
            access.principal(),
            AuditRecord {
                organization_id: org.id,
                action: "SpendThresholdCrossed",
                target_type: "organization",
                target_id: ids::encode(IdKind::Organization, org.id),
                request_id: "",
                summary: data,
            },
        )
        .await?;
    }
    Ok(())
}

//! The statements of an ingestion transaction: lock the counters, insert the events,
//! add to the billing records and to the counters — each one statement per chunk.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::{
    ActiveValue::Set,
    ConnectionTrait, DbBackend, EntityTrait, ExprTrait, IdenStatic, Statement,
    sea_query::{Alias, Expr, OnConflict},
};
use uuid::Uuid;

use crate::{
    domain::{
        billing::{Metric, Month},
        ids::new_id,
    },
    error::{Error, Result},
    storage::{
        Tx,
        entities::{billing_records, usage_counters, usage_events},
    },
};

use super::{Valid, ingest::Member, reads::Reads};

/// Rows per multi-row INSERT (well under both backends' bind-parameter limits).
const INSERT_CHUNK: usize = 500;

/// A counter row: organization and month.
pub(super) type CounterKey = (Uuid, Month);

/// `table.column + excluded.column`: an upsert that adds the new row's amount.
fn added<C: IdenStatic>(table: impl IdenStatic, column: C) -> Expr {
    Expr::col((table, column)).add(Expr::col((Alias::new("excluded"), column)))
}

/// What the accepted events of an ingestion write, gathered as they are decided.
#[derive(Default)]
pub(super) struct Pending {
    events: Vec<usage_events::Model>,
    records: BTreeMap<(Uuid, Uuid, String), billing_records::Model>,
    counters: BTreeMap<CounterKey, usage_counters::Model>,
}

impl Pending {
    /// Adds an accepted event: its row, its share of the billing record and of the
    /// counter.
    pub fn add(&mut self, reads: &Reads, member: &Member, v: &Valid, recorded_by: &str) {
        let org = member.access.org();
        let now = member.now;
        self.events.push(usage_events::Model {
            id: new_id(),
            organization_id: org.id,
            event_id: v.event_id.clone(),
            agent_id: v.agent_id,
            metric: v.metric.as_str().to_owned(),
            quantity: v.quantity,
            cost_micros: v.cost_micros,
            occurred_at: v.occurred_at,
            month: v.month.to_string(),
            channel: v.channel.clone(),
            dimensions: v.dimensions.clone(),
            recorded_by: recorded_by.to_owned(),
            create_time: now,
        });
        let tokens = if v.metric == Metric::Tokens {
            v.quantity
        } else {
            0
        };
        let agent = reads.agents.get(&v.agent_id);
        let name = agent.map(|a| a.name.clone()).unwrap_or_default();
        let key = (org.id, v.agent_id, v.month.to_string());
        let record = self.records.entry(key).or_insert_with(|| {
            // Used when the record is new: the agent's effective monthly rate.
            let custom = agent.and_then(|a| a.billing_rate_micros);
            billing_records::Model {
                id: new_id(),
                organization_id: org.id,
                agent_id: v.agent_id,
                month: v.month.to_string(),
                agent_name: String::new(),
                tokens: 0,
                cost_micros: 0,
                revenue_micros: custom.unwrap_or(org.billing_rate_micros),
                custom_rate: custom.is_some(),
                invoice_id: None,
                create_time: now,
                update_time: now,
            }
        });
        record.tokens += tokens;
        record.cost_micros += v.cost_micros;
        record.agent_name = name;
        record.update_time = std::cmp::max(record.update_time, now);
        let delta =
            self.counters
                .entry((org.id, v.month))
                .or_insert_with(|| usage_counters::Model {
                    organization_id: org.id,
                    month: v.month.to_string(),
                    cost_micros: 0,
                    tokens: 0,
                    messages: 0,
                    conversations: 0,
                    minutes: 0,
                    logs: 0,
                    events: 0,
                    update_time: now,
                });
        apply(delta, v);
        delta.update_time = std::cmp::max(delta.update_time, now);
    }

    /// Writes everything gathered: events, then records, then counters.
    pub async fn write(self, tx: &Tx) -> Result<()> {
        if self.events.is_empty() {
            return Ok(());
        }
        insert_events(tx, self.events).await?;
        add_to_records(tx, self.records.into_values().collect()).await?;
        add_to_counters(tx, self.counters.into_values().collect()).await
    }
}

/// Adds an event's amounts to a counter.
pub(super) fn apply(counter: &mut usage_counters::Model, v: &Valid) {
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

/// Locks the counter rows of `keys` (creating them on first use) and returns their
/// totals. One upsert per chunk whose no-op update takes each row's lock, in key
/// order: every ingestion locks in the same order, so two never deadlock on counters.
pub(super) async fn lock_counters(
    tx: &Tx,
    keys: &BTreeSet<CounterKey>,
    now: i64,
) -> Result<BTreeMap<CounterKey, usage_counters::Model>> {
    use usage_counters::Column as C;
    let mut locked = BTreeMap::new();
    let keys: Vec<&CounterKey> = keys.iter().collect();
    for chunk in keys.chunks(INSERT_CHUNK) {
        let rows = chunk
            .iter()
            .map(|(org_id, month)| usage_counters::ActiveModel {
                organization_id: Set(*org_id),
                month: Set(month.to_string()),
                cost_micros: Set(0),
                tokens: Set(0),
                messages: Set(0),
                conversations: Set(0),
                minutes: Set(0),
                logs: Set(0),
                events: Set(0),
                update_time: Set(now),
            });
        let rows = usage_counters::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([C::OrganizationId, C::Month])
                    .value(
                        C::UpdateTime,
                        Expr::col((usage_counters::Entity, C::UpdateTime)),
                    )
                    .to_owned(),
            )
            .exec_with_returning(&**tx)
            .await?;
        for row in rows {
            let month = row
                .month
                .parse::<Month>()
                .map_err(|e| Error::Internal(format!("usage counter month: {e}")))?;
            locked.insert((row.organization_id, month), row);
        }
    }
    if locked.len() != keys.len() {
        return Err(Error::Internal(
            "a usage counter was not returned by its lock".into(),
        ));
    }
    Ok(locked)
}

/// Inserts the accepted events, ordered by (organization, event id) so that two
/// transactions racing on the same ids wait for each other in one order.
async fn insert_events(tx: &Tx, mut rows: Vec<usage_events::Model>) -> Result<()> {
    rows.sort_by(|a, b| (a.organization_id, &a.event_id).cmp(&(b.organization_id, &b.event_id)));
    if tx.get_database_backend() == DbBackend::Postgres {
        return insert_events_pg(tx, &rows).await;
    }
    let rows: Vec<usage_events::ActiveModel> = rows.into_iter().map(Into::into).collect();
    for chunk in rows.chunks(INSERT_CHUNK) {
        usage_events::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&**tx)
            .await?;
    }
    Ok(())
}

/// PostgreSQL: every event in one statement of one `jsonb` parameter. A multi-row
/// `VALUES` of 13 parameters per row is a new statement text for every group size:
/// PostgreSQL parsed and planned up to 6,500 parameters for each group (the session
/// was on CPU in that INSERT for most of a group's time), and the driver prepared it
/// again. This text never changes, so it is prepared once per connection, and
/// `jsonb_to_recordset` keeps the array's order (the lock order above).
async fn insert_events_pg(tx: &Tx, rows: &[usage_events::Model]) -> Result<()> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "organization_id": e.organization_id,
                "event_id": e.event_id,
                "agent_id": e.agent_id,
                "metric": e.metric,
                "quantity": e.quantity,
                "cost_micros": e.cost_micros,
                "occurred_at": e.occurred_at,
                "month": e.month,
                "channel": e.channel,
                "dimensions": e.dimensions,
                "recorded_by": e.recorded_by,
                "create_time": e.create_time,
            })
        })
        .collect();
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO usage_events (id, organization_id, event_id, agent_id, metric, quantity, \
         cost_micros, occurred_at, month, channel, dimensions, recorded_by, create_time) \
         SELECT id, organization_id, event_id, agent_id, metric, quantity, cost_micros, \
         occurred_at, month, channel, dimensions, recorded_by, create_time \
         FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, organization_id uuid, event_id text, \
         agent_id uuid, metric text, quantity bigint, cost_micros bigint, occurred_at bigint, \
         month text, channel text, dimensions text, recorded_by text, create_time bigint)",
        [serde_json::Value::Array(rows).into()],
    );
    tx.execute_raw(statement).await?;
    Ok(())
}

/// Adds to the (organization, agent, month) billing records without reading them: a
/// new record is inserted as given (its rate fixed by the caller); an existing one —
/// billed on an invoice or not — gains the tokens and cost and takes the agent's
/// current name, keeping its rate, `custom_rate` and `invoice_id`.
async fn add_to_records(tx: &Tx, rows: Vec<billing_records::Model>) -> Result<()> {
    use billing_records::Column as R;
    let table = billing_records::Entity;
    let rows: Vec<billing_records::ActiveModel> = rows.into_iter().map(Into::into).collect();
    for chunk in rows.chunks(INSERT_CHUNK) {
        billing_records::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([R::OrganizationId, R::AgentId, R::Month])
                    .value(R::Tokens, added(table, R::Tokens))
                    .value(R::CostMicros, added(table, R::CostMicros))
                    .update_columns([R::AgentName, R::UpdateTime])
                    .to_owned(),
            )
            .exec_without_returning(&**tx)
            .await?;
    }
    Ok(())
}

/// Adds each row's amounts to its (locked) counter row.
async fn add_to_counters(tx: &Tx, rows: Vec<usage_counters::Model>) -> Result<()> {
    use usage_counters::Column as C;
    let table = usage_counters::Entity;
    let rows: Vec<usage_counters::ActiveModel> = rows.into_iter().map(Into::into).collect();
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut on_conflict = OnConflict::columns([C::OrganizationId, C::Month]);
        for column in [
            C::CostMicros,
            C::Tokens,
            C::Messages,
            C::Conversations,
            C::Minutes,
            C::Logs,
            C::Events,
        ] {
            on_conflict.value(column, added(table, column));
        }
        on_conflict.update_column(C::UpdateTime);
        usage_counters::Entity::insert_many(chunk.to_vec())
            .on_conflict(on_conflict)
            .exec_without_returning(&**tx)
            .await?;
    }
    Ok(())
}
